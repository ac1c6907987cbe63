"""`masn train` and `masn evaluate` when things go wrong around them: a second run into the
same folder, a lock left by a killed run, a read-only or full disk, Ctrl-C, and run records read
from another folder. Tiny collections (a few videos, 8-d features), one epoch each."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import yaml

from masn.pipeline.cli import main
from masn.pipeline.examples.planted import SyntheticShape, write_synthetic
from masn.pipeline.training import trainer
from masn.pipeline.training.checkpoint import load_checkpoint
from masn.pipeline.training.trainer import Trainer
from tests.builders import child_env

TINY = SyntheticShape(videos=12, questions_per_video=1, frames=2, objects=2, dim=8)
FLAGS = [
    "--task=custom",
    "--glove=random",
    "--hidden=16",
    "--batch-size=4",
    "--workers=0",
    "--device=cpu",
    "--log-every=1",
    "--epochs=1",
]
READ_ONLY = Path("/sys") if os.geteuid() == 0 else None  # chmod does not stop root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic(tmp_path_factory.mktemp("tiny"), "open_ended", TINY)


def _args(tiny: tuple[Path, Path], out: Path | str, *extra: str) -> list[str]:
    annotations, store = tiny
    paths = ["--annotations", str(annotations), "--features", str(store), "--out", str(out)]
    return ["train", *paths, *FLAGS, *extra]


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _error(caplog: pytest.LogCaptureFixture) -> str:
    """The one error line of a failed command (no traceback)."""
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "\n" not in record.getMessage() and not record.exc_info
    return record.getMessage()


def _read_only_folder(tmp_path: Path) -> Path:
    if READ_ONLY is not None:
        return READ_ONLY
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return folder


def test_a_second_run_into_one_folder_is_refused_and_a_killed_ones_lock_taken_over(
    tiny, tmp_path, monkeypatch, caplog
):
    """Two runs into one --out both trained (metrics twice, checkpoints of whichever saved
    last); now the second is refused naming the first's pid and host, and once the first is
    killed, its lock is taken over with a warning."""
    run = tmp_path / "run"
    holder = subprocess.Popen(  # holds the run folder's lock as a training run does
        [
            sys.executable,
            "-c",
            "import sys, time; from masn.locking import ExclusiveLock; "
            "ExclusiveLock(sys.argv[1], 'x', 'y').acquire(); print('held', flush=True); "
            "time.sleep(60)",
            str(run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(_args(tiny, run)) == 2
        message = _error(caplog)
        assert message.startswith(f"another process (pid {holder.pid} on host ")
        assert f"is training into {run}; wait for it to end or choose another --out" in message
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing of the second run
    finally:
        holder.kill()
        holder.wait()
    caplog.clear()
    ran = []
    monkeypatch.setattr(
        trainer, "Trainer", lambda *args: SimpleNamespace(fit=lambda: ran.append(1))
    )
    assert main(_args(tiny, run)) == 0 and ran == [1]
    assert f"the process that was training into {run} (pid {holder.pid} on host" in caplog.text
    assert "ended without releasing it (killed?)" in caplog.text
    assert not (run / ".lock").exists()  # released at the end


def test_a_read_only_out_is_one_line_before_any_work(tiny, tmp_path, caplog):
    folder = _read_only_folder(tmp_path)
    assert main(_args(tiny, folder / "run")) == 2
    prefix = f"masn train cannot write its run folder: cannot create its folder {folder / 'run'}"
    assert re.fullmatch(rf"{re.escape(prefix)} \([^)]+\); choose a writable --out", _error(caplog))


def test_a_full_disk_at_a_checkpoint_is_one_line_and_a_rerun_completes(
    tiny, tmp_path, monkeypatch, caplog
):
    """torch.save on a full disk raised RuntimeError('basic_ios::clear: iostream error'): now
    one line naming best.pt and its size; the rerun completes, without the first try's rows."""
    run = tmp_path / "run"
    save = torch.save

    def full(payload, path, *args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", full)
    assert main(_args(tiny, run)) == 2
    message = _error(caplog)
    assert message.startswith(f"the disk is full: writing {run / 'best.pt'} needs about ")
    assert message.endswith(
        "free some space there (or write elsewhere) and run the command "
        "again: work already saved is kept"
    )
    assert not list(run.glob("*.pt")) and not list(run.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", save)
    assert main(_args(tiny, run)) == 0
    steps = [(e["event"], e["step"]) for e in _events(run)]
    assert len(steps) == len(set(steps))  # the failed try's rows are gone


def test_ctrl_c_in_training_is_one_line_with_the_resume_command(
    tiny, tmp_path, monkeypatch, caplog
):
    run = tmp_path / "run"
    step, steps = Trainer.train_step, []

    def interrupted(self, batch, share=1.0):
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt
        return step(self, batch, share)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    args = _args(tiny, run, "--save-every=1")
    assert main(args) == 130
    message = _error(caplog)
    expected = f"masn {shlex.join(args)} --resume"
    assert message == f"interrupted; the work already saved is kept: to go on, run {expected}"
    assert not (run / ".lock").exists()
    assert load_checkpoint(run / "last.pt")["loop"]["global_step"] == 1
    monkeypatch.setattr(Trainer, "train_step", step)
    assert main(shlex.split(expected)[1:]) == 0
    assert [e["step"] for e in _events(run) if e["event"] == "train"] == [1, 2]  # 8 questions


def test_run_records_hold_paths_that_work_from_any_folder(tiny, tmp_path, monkeypatch, caplog):
    """A run started with relative paths (as the demo does) is evaluated from another folder."""
    annotations, store = tiny
    here = tmp_path / "checkout"
    here.mkdir()
    shutil.copy(store, here / "features.h5")
    shutil.copytree(annotations, here / "questions")
    monkeypatch.chdir(here)
    relative = ["--annotations", "questions", "--features", "features.h5", "--out", "run"]
    assert main(["train", *relative, *FLAGS]) == 0
    recorded = load_checkpoint(here / "run" / "best.pt")["info"]["train_config"]
    assert recorded["features"] == str(here / "features.h5")
    assert recorded["annotations"] == str(here / "questions")
    assert recorded["out"] == str(here / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    checkpoint = "../checkout/run/best.pt"
    assert main(["evaluate", "--checkpoint", checkpoint, "--device=cpu", "--workers=0"]) == 0
    assert (here / "run" / "evaluate-test" / "metrics.json").is_file()
    # Evaluate's own record replays from any folder too (it held the relative checkpoint).
    record = here / "run" / "evaluate-test" / "config.yaml"
    assert yaml.safe_load(record.read_text())["checkpoint"] == str(here / "run" / "best.pt")
    monkeypatch.chdir(tmp_path)
    replay = ["evaluate", "--config", str(record), "--out", str(tmp_path / "again")]
    assert main(replay) == 0 and (tmp_path / "again" / "metrics.json").is_file()
    monkeypatch.chdir(elsewhere)
    caplog.clear()
    folder = _read_only_folder(tmp_path)
    out = ["--out", str(folder / "evaluation")]
    assert main(["evaluate", "--checkpoint", checkpoint, "--device=cpu", *out]) == 2
    assert _error(caplog).startswith("masn evaluate cannot write its results: cannot create ")


def _damage(store: Path, key: str, how: str) -> None:
    """Spoils one video of a store in place: another width, integers, a dataset gone, NaN."""
    with h5py.File(store, "a") as file:
        group = file["videos"][key]
        if how == "width":
            data = group["appearance"][()]
            del group["appearance"]
            group["appearance"] = data[:, :5]
        elif how == "dtype":
            data = group["motion"][()]
            del group["motion"]
            group["motion"] = data.astype(np.int64)
        elif how == "missing":
            del group["motion_objects"]
        else:
            group["appearance"][0, 0] = np.nan


DAMAGED = {
    "width": "appearance: expected float16 (T, 8), found float16 (2, 5)",
    "dtype": "motion: expected float16 (T, 8), found int64 (2, 8)",
    "missing": "motion_objects: missing",
}


@pytest.mark.parametrize("how", DAMAGED)
def test_a_damaged_video_is_left_out_named_and_counted(tiny, tmp_path, caplog, how):
    """A wrong shape, dtype or a missing dataset crashed training mid-epoch with a numpy
    traceback naming no video. Its questions are now left out before training (the check reads
    the HDF5 headers only), with a warning naming video, dataset, expected and found, and the
    report counts it."""
    annotations, store = tiny
    damaged = Path(shutil.copy(store, tmp_path / "features.h5"))
    _damage(damaged, "v00003", how)
    assert main(_args((annotations, damaged), tmp_path / "run")) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["damaged_videos"] == 1 and report["questions"]["train"] == 7  # of 8
    (warning,) = [r.getMessage() for r in caplog.records if "are damaged" in r.getMessage()]
    assert warning == (
        f"train: 1 of 8 questions (1 video) are left out: their features in {damaged} are "
        f"damaged: 'v00003' ({DAMAGED[how]}); re-extract them into a new store"
    )


def test_non_finite_features_are_reported_as_features_naming_the_video(tiny, tmp_path, caplog):
    """NaN features ended in "training diverged ... lower --lr or check these questions'
    answers"; they are found as the video is read (only a full read could find them before)."""
    annotations, store = tiny
    damaged = Path(shutil.copy(store, tmp_path / "features.h5"))
    _damage(damaged, "v00003", "nan")
    assert main(_args((annotations, damaged), tmp_path / "run")) == 2
    assert _error(caplog) == (
        f"video 'v00003' in {damaged}: appearance holds NaN or infinite values, so the store was "
        "damaged after it was written (masn extract never writes them); leave the video's "
        "questions out of the annotations, or extract the videos into a new store"
    )
