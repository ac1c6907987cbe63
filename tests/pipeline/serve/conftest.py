"""The serve tests' shared inputs, built once: a small `masn demo --quick` (five rendered demo
clips extracted with random networks; MASN trained one epoch on the demo's open-ended questions,
full and with the single-attention ablation, and on its multiple-choice questions; each run
evaluated on its held-out clips), the app serving them, and a live server for browsers."""

from __future__ import annotations

import select
import shlex
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from masn.datasets import task_spec
from masn.datasets.splits import load_splits
from masn.extract.run.collection import run_extraction
from masn.extract.settings import DetectorConfig, ExtractionConfig, ExtractSettings, RunOptions
from masn.pipeline.examples.demo import train_and_evaluate, training_settings
from masn.pipeline.examples.demo_sample import CLIPS, questions_dir, render_clip
from masn.pipeline.examples.settings import DemoSettings
from masn.pipeline.serve.app import create_app
from masn.pipeline.serve.server import address_url, bind
from masn.pipeline.serve.settings import ServeSettings
from tests.builders import child_env, masn_command

# The extraction of `masn demo --quick`: one sampled frame per 2 s, tiny networks.
QUICK = ExtractionConfig(
    sample_every=12,
    frame_size=64,
    detector=DetectorConfig(min_size=48, max_size=80, post_nms_top_n=1, pool_size=7, boxes=1),
)
SEED = 999  # the demo's training seed (its validation split depends on it)


@dataclass(frozen=True)
class MiniDemo:
    """A demo folder: videos, features.h5 and runs/<name>/ (best.pt, evaluate-test/)."""

    root: Path
    store: Path
    runs: dict[str, Path]
    keys: dict[str, list[str]]  # "train", "val", "test" -> video keys

    def settings(self, **changes) -> ServeSettings:
        runs = tuple(self.runs.values())
        return ServeSettings(store=self.store, run=runs, device="cpu", **changes)


def _clips() -> dict[str, list[str]]:
    """Two training, one validation and two test clips of the demo's open-ended split."""
    rows = load_splits(task_spec("custom", "open_ended"), questions_dir("open_ended"), SEED)
    wanted = {"train": 2, "val": 1, "test": 2}
    return {
        split: list(dict.fromkeys(row.keys[0] for row in rows[split]))[:count]
        for split, count in wanted.items()
    }


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> MiniDemo:
    root = tmp_path_factory.mktemp("serve-demo")
    keys = _clips()
    chosen = {key for split in keys.values() for key in split}
    for spec in CLIPS:
        if spec.key in chosen:
            render_clip(spec, root / "videos" / spec.key)
    store = root / "features.h5"
    extract = ExtractSettings(
        out=store,
        videos=root / "videos",
        random_weights=True,
        features=QUICK,
        run=RunOptions("cpu", batch_size=8, workers=0),
    )
    assert run_extraction(extract) == 0
    base = training_settings(DemoSettings(quick=True, epochs=1), store, "random", "cpu")
    runs = {
        "full": ("open_ended", base),
        "single": ("open_ended", replace(base, fusion="single")),
        "choice": ("multiple_choice", base),
    }
    folders = {}
    for name, (kind, settings) in runs.items():
        folder = root / "runs" / name
        train_and_evaluate(settings, kind, folder, "cpu")
        folders[name] = folder
    return MiniDemo(root, store, folders, keys)


@pytest.fixture(scope="package")
def app(demo: MiniDemo) -> Starlette:
    return create_app(demo.settings())


@pytest.fixture(scope="package")
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="package")
def live(app: Starlette) -> Iterator[str]:
    """The app served by uvicorn on a free local port (in a thread); yields its URL."""
    listener = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
        assert thread.is_alive(), "the server did not start"
    yield address_url(listener).rstrip("/")
    server.should_exit = True
    thread.join(10)
    listener.close()


def copy_demo(demo: MiniDemo, folder: Path) -> MiniDemo:
    """A copy of the demo's store (the runs stay shared): for tests that change the store."""
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "features.h5"
    shutil.copyfile(demo.store, store)
    return replace(demo, store=store)


def check_serve_command(command: str, cwd: Path) -> None:
    """Runs a printed `masn serve ...` command as printed (plus ``--port 0``: 8000 may be taken
    on a test machine), waits for its URL and reads its store and results pages."""
    args = shlex.split(command)
    assert args[:2] == ["masn", "serve"], command
    process = subprocess.Popen(
        masn_command(*args[1:], "--port", "0"),
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("masn serve: http://127.0.0.1:"), (line, process.poll())
        url = line.split()[2]
        for path in ("store", "results?run=0", "results?run=1", "ask"):
            with urllib.request.urlopen(url + path, timeout=60) as response:
                assert response.status == 200, path
                assert "masn serve" in response.read().decode()
    finally:
        process.terminate()
        process.wait(30)
