"""`masn extract` (run_extraction): a messy collection run twice, kill -9 and rerun, two
torchrun processes, and the one-line exit-2 mistakes checked before any work."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from masn.extract.run.collection import run_extraction
from masn.extract.run.failure_log import failures_path
from masn.extract.settings import ExtractSettings, RunOptions
from masn.extract.store.reader import FeatureStore
from masn.extract.store.writer import StoreWriter
from tests.builders import (
    HEIGHT,
    SMALL_FLAGS,
    TINY_EXTRACTION,
    TINY_FLAGS,
    WIDTH,
    assert_same_stores,
    child_env,
    masn_command,
    picture,
    write_absurd_rate_avi,
    write_clip,
    write_sized,
)

FASTSTART = {"movflags": "faststart"}  # index first, so a cut falls inside the frames


def _extract_arguments(videos: Path, out: Path) -> list[str]:
    """`masn extract` of ``videos`` into ``out``: random tiny networks (32-pixel frames: these
    tests are about the run, not the features), one frame per batch."""
    flags = ["--batch-size", "1", "--workers", "0", "--device", "cpu", *TINY_FLAGS]
    return ["extract", "--videos", str(videos), "--out", str(out), "--random-weights", *flags]


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("short")
    for index in range(6):
        write_clip(folder / f"clip{index}.mp4", "libx264", 25, list(range(8 + 4 * index)))
    return folder


@pytest.fixture(scope="module")
def reference_store(short_clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "all.h5"
    command = masn_command(*_extract_arguments(short_clips, out))
    subprocess.run(command, check=True, env=child_env(), capture_output=True)
    return out


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_loses_nothing(short_clips, reference_store, tmp_path):
    out = tmp_path / "killed.h5"
    command = masn_command(*_extract_arguments(short_clips, out))
    process = subprocess.Popen(command, env=child_env(), stderr=subprocess.PIPE)
    parts = Path(str(out) + ".parts")
    deadline = time.monotonic() + 240
    while len(list(parts.glob("*.h5"))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    committed = {p.name for p in parts.glob("*.h5")}
    assert 2 <= len(committed) < 6 and not out.exists()

    rerun = subprocess.run(command, env=child_env(), capture_output=True, text=True, check=True)
    assert f"{len(committed)} of 6 videos are already in" in rerun.stderr
    assert f"stored {6 - len(committed)} videos" in rerun.stderr
    assert_same_stores(reference_store, out)


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(short_clips, reference_store, tmp_path):
    out = tmp_path / "sharded.h5"
    command = masn_command(*_extract_arguments(short_clips, out), processes=2)
    subprocess.run(command, check=True, env=child_env(), capture_output=True, timeout=600)
    shards = sorted(tmp_path.glob("sharded.shard-*-of-0002.h5"))
    assert len(shards) == 2
    with FeatureStore(shards[0]) as first, FeatureStore(shards[1]) as second:
        assert not set(first.keys()) & set(second.keys())
        assert len(first) + len(second) == 6
    assert_same_stores(reference_store, out)


ROOT = os.geteuid() == 0  # chmod 000 does not stop root
MESSY_STORED = {"good.mp4", "sub/good.avi", "absurd.avi", "tiny1x1.mp4", "tiny17x9.mp4"}
MESSY_STORED |= {"tall16x2000.mp4", "image.mp4", "caf%E9.mp4", "portrait.mp4"}
MESSY_FAILED = {"empty.mp4": "empty file", "notes.mp4": "not a video"}
MESSY_FAILED |= {"truncated.mp4": "truncated or corrupt"}


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("messy")
    (folder / "sub").mkdir()
    good = write_clip(folder / "good.mp4", "libx264", 25, list(range(10))).path
    write_clip(folder / "sub" / "good.avi", "mpeg4", 25, list(range(10)))
    write_absurd_rate_avi(folder / "absurd.avi")
    write_sized(folder / "tiny1x1.mp4", 1, 1)
    write_sized(folder / "tiny17x9.mp4", 17, 9)
    write_sized(folder / "tall16x2000.mp4", 16, 2000)
    (folder / "image.mp4").write_bytes(cv2.imencode(".png", picture(2))[1].tobytes())
    shutil.copy(good, os.path.join(os.fsencode(folder), b"caf\xe9.mp4"))
    write_clip(folder / "portrait.mp4", "libx264", 25, list(range(10)), rotation=-90)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are not frames")
    whole = write_clip(folder / "whole.mp4", "libx264", 25, list(range(30)), None, FASTSTART, True)
    (folder / "truncated.mp4").write_bytes(
        whole.path.read_bytes()[: whole.path.stat().st_size // 2]
    )
    whole.path.unlink()
    private = folder / "private"
    private.mkdir()
    shutil.copy(good, private / "hidden.mp4")
    private.chmod(0)
    yield folder
    private.chmod(0o755)


@pytest.fixture(scope="module")
def messy_runs(messy: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two `masn extract` runs over the messy folder: exit codes, store, failures, log."""
    store = tmp_path_factory.mktemp("messy-run") / "features.h5"
    settings = ExtractSettings(
        out=store,
        videos=messy,
        random_weights=True,
        features=TINY_EXTRACTION,
        run=RunOptions("cpu", batch_size=4, workers=1),
    )
    handler = _Collect()
    logging.getLogger("masn").addHandler(handler)
    try:
        codes = [run_extraction(settings) for _ in range(2)]
    finally:
        logging.getLogger("masn").removeHandler(handler)
    return codes, store, handler.lines


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_messy_collection_is_stored_or_recorded_twice_over(messy_runs):
    codes, store, lines = messy_runs
    assert codes == [0, 0]
    expected = MESSY_STORED | ({"private/hidden.mp4"} if ROOT else set())
    with FeatureStore(store) as features:
        assert set(features.keys()) == expected
    entries = [json.loads(line) for line in failures_path(store).read_text().splitlines()]
    assert sorted(entry["key"] for entry in entries) == sorted(MESSY_FAILED)  # once each
    for entry in entries:
        assert entry["reason"].startswith(MESSY_FAILED[entry["key"]]), entry
        assert (entry["stage"], entry["attempts"]) == ("decode", 2)
        assert Path(entry["path"]).name == entry["key"] and entry["time"]
    if not ROOT:
        assert any("could not read 1 folder(s)" in line and "private" in line for line in lines)


def test_odd_videos_follow_the_documented_rules(messy_runs):
    _, store, _ = messy_runs
    with FeatureStore(store) as features:
        single = {key: features.read(key) for key in ("absurd.avi", "image.mp4")}
        for key, record in single.items():  # one frame kept, not zero
            assert (record.frames, len(record.frame_times)) == (1, 1), key
        portrait = features.read("portrait.mp4")
        assert (portrait.width, portrait.height) == (HEIGHT, WIDTH)
        escaped = features.read("caf%E9.mp4")
        assert os.fsencode(escaped.path).endswith(b"/caf\xe9.mp4")
        assert Path(escaped.path).is_file()
        for key, size in (("tiny1x1.mp4", (1, 1)), ("tiny17x9.mp4", (17, 9))):
            record = features.read(key)
            assert (record.width, record.height) == size
            x1, y1, x2, y2 = np.moveaxis(record.boxes, -1, 0)
            assert (x1 >= 0).all() and (y1 >= 0).all(), key
            assert (x2 <= size[0]).all() and (y2 <= size[1]).all(), key
            assert np.isfinite(record.appearance_objects).all()
        tall = features.read("tall16x2000.mp4")
        assert (tall.boxes[..., 2] <= 16).all() and (tall.boxes[..., 3] <= 2000).all()


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one-clip")
    write_clip(folder / "clip.mp4", "libx264", 25, list(range(10)))
    return folder


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder that refuses new files, even to root (sysfs), else a chmod-555 one."""
    if not ROOT:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    if Path("/sys/kernel").is_dir() and not os.access("/sys/kernel", os.W_OK | os.X_OK):
        return Path("/sys/kernel")
    try:
        (Path("/sys") / ".masn-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses root")


def _cuda_absent() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("out-folder", "is a folder; give a file path such as"),
        ("out-devnull", "is not a regular file"),
        ("out-parent-a-file", "is not a folder"),
        ("out-read-only", "does not accept new files"),
        ("out-in-use", r"another process \(pid \d+ on host .*\) is writing .*features\.h5"),
        ("device-cuda", "--device cuda: this PyTorch"),
        ("device-cuda:3", "--device cuda:3: this PyTorch"),
        ("device-gpu", "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
        ("device-tpu", "unknown device 'tpu'"),
        ("min-size-0", "detector min_size must be a whole number >= 1, got 0"),
        ("proposals-0", r"proposals \(post_nms_top_n\) must be a whole number >= 1, got 0"),
        ("batch-size-0", "batch size must be a whole number >= 1, got 0"),
        ("min-over-max", "larger than max_size"),
        ("decord-missing", "pip install decord"),
        ("videos-empty", "no folder videos found under"),
        ("videos-none", "no folder videos found under"),
    ],
)
def test_cli_mistakes_end_with_one_line_and_exit_2(
    case, message, one_clip, tmp_path, monkeypatch, caplog
):
    from masn.pipeline.cli import main

    videos, out = one_clip, tmp_path / "features.h5"
    flags = ["--random-weights", "--device", "cpu", "--workers", "0", *SMALL_FLAGS]
    if case == "out-folder":
        out = tmp_path
    elif case == "out-devnull":
        out = Path("/dev/null")
    elif case == "out-parent-a-file":
        (tmp_path / "a-file").write_text("")
        out = tmp_path / "a-file" / "features.h5"
    elif case == "out-read-only":
        out = _read_only_folder(tmp_path) / "features.h5"
    elif case.startswith("device-"):
        if case.startswith("device-cuda"):
            _cuda_absent()
        flags += ["--device", case.removeprefix("device-")]
    elif case == "min-size-0":
        flags += ["--min-size", "0"]
    elif case == "proposals-0":
        flags += ["--proposals", "0"]
    elif case == "batch-size-0":
        flags += ["--batch-size", "0"]
    elif case == "min-over-max":
        flags += ["--min-size", "200", "--max-size", "100"]
    elif case == "decord-missing":
        monkeypatch.setitem(sys.modules, "decord", None)
        flags += ["--decoder", "decord"]
    elif case.startswith("videos-"):
        videos = tmp_path / "videos"
        videos.mkdir()
        if case == "videos-none":
            (videos / "notes.txt").write_text("no videos here")
    writer = StoreWriter(out, {}, {}) if case == "out-in-use" else None
    try:
        with caplog.at_level(logging.INFO):
            code = main(["extract", "--videos", str(videos), "--out", str(out), *flags])
    finally:
        if writer is not None:
            writer.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2, caplog.text
    assert len(errors) == 1 and re.search(message, errors[0].getMessage()), caplog.text
    assert "\n" not in errors[0].getMessage() and not errors[0].exc_info
    assert not (tmp_path / "features.h5.parts").exists()  # no work was started


@pytest.mark.parametrize("command", ["show", "extract-merge"])
def test_cli_on_a_damaged_store_says_which_file_and_what_to_do(command, tmp_path, caplog):
    from masn.pipeline.cli import main

    store = tmp_path / "features.h5"
    store.write_text("not a store")
    if command == "show":
        argv = ["show", "clip.mp4", "--store", str(store), "--out", str(tmp_path / "x.png")]
    else:
        argv = ["extract", "--merge", str(store), "--out", str(tmp_path / "merged.h5")]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 2
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"{store} is damaged or not an HDF5 file" in error.getMessage()
    assert "rerun `masn extract`" in error.getMessage()
