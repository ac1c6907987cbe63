"""Reading masn checkpoints: a damaged, foreign or code-running file is one line naming it
(exit 2 in `masn evaluate` and `masn answer`), never a traceback and never executed."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from masn.errors import InvalidInput, MissingInput
from masn.pipeline.answering.answer import figure_path
from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.cli import main
from masn.pipeline.training.checkpoint import (
    FORMAT,
    checkpoint_file,
    load_checkpoint,
    load_predictor,
)
from masn.pipeline.training.settings import BEST
from tests.builders import make_checkpoint


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint"), "open_ended")


def _damaged(good: Path, folder: Path, how: str) -> Path:
    path = folder / f"{how}.pt"
    if how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("best.pt\n")
    elif how == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif how == "foreign":
        torch.save({"layer.weight": torch.zeros(2)}, path)
    elif how == "newer":
        torch.save({"format": FORMAT, "version": 99}, path)
    elif how == "runs-code":
        path.write_bytes(pickle.dumps(_RunsCode(folder / "pwned"), protocol=2))
    return path


CASES = {
    "empty": "is empty \\(0 bytes\\), not a masn checkpoint",
    "text": "is not a readable masn checkpoint",
    "truncated": "is not a readable masn checkpoint",
    "foreign": "is not a masn checkpoint \\(no format 'masn-checkpoint'\\)",
    "newer": "has checkpoint version 99, not 1",
    "runs-code": "is not a readable masn checkpoint .*system",
}


@pytest.mark.parametrize("how", CASES)
def test_a_damaged_or_foreign_checkpoint_is_refused_naming_it(good, tmp_path, how):
    path = _damaged(good, tmp_path, how)
    with pytest.raises(InvalidInput, match=f"{path.name} {CASES[how]}"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    assert load_predictor(good).model is not None  # the good file still loads


def test_a_missing_checkpoint_names_what_writes_one(tmp_path):
    with pytest.raises(MissingInput, match=r"masn train writes RUN/best\.pt"):
        load_checkpoint(tmp_path / "best.pt")


def test_a_run_folder_stands_for_its_best_checkpoint(good, tmp_path):
    """One resolver: masn.load, masn evaluate and masn answer take a run folder or a file."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(good, run / BEST)
    assert checkpoint_file(run) == run / BEST and checkpoint_file(good) == good
    assert load_predictor(run).vocabulary == load_predictor(good).vocabulary
    video = tmp_path / "clip.mp4"
    answer = AnswerSettings(video=video, question="what?", checkpoint=run)
    assert figure_path(answer) == run / "answers" / "clip.answer.png"
    with pytest.raises(MissingInput, match=r"has no best\.pt: give a run folder of masn train"):
        checkpoint_file(tmp_path)


def test_evaluate_prints_the_settings_it_will_use(good, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(good, run / BEST)
    assert main(["evaluate", "--checkpoint", str(run), "--split", "val", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["checkpoint"] == str(run / BEST) and printed["out"] == str(run / "evaluate-val")
    assert (printed["batch_size"], printed["precision"], printed["seed"]) == (32, "fp32", 999)
    assert printed["features"] == str(Path("features/folder.h5").resolve())  # the default


@pytest.mark.parametrize("command", ["evaluate", "answer"])
@pytest.mark.parametrize("how", ["empty", "truncated", "runs-code"])
def test_commands_on_a_damaged_checkpoint_say_one_line_and_exit_2(
    good, tmp_path, caplog, command, how
):
    path = _damaged(good, tmp_path, how)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # never read: the checkpoint is checked first
    argv = {
        "evaluate": ["evaluate", "--checkpoint", str(path)],
        "answer": ["answer", str(video), "what?", "--checkpoint", str(path), "--device", "cpu"],
    }[command]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 2
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert str(path) in error.getMessage() and "\n" not in error.getMessage()
    assert not error.exc_info and not (tmp_path / "pwned").exists()
