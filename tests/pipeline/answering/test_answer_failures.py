"""`masn answer` when the figure cannot be written or the question is absurdly long: the answer
is printed first, figures go only where asked or under the run folder, and a 100,000-character
question is cut to the model's limit with one warning. The extraction is stood in for by the
shared record (conftest.py)."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from masn.errors import DiskFull, InvalidInput
from masn.extract.run.one_video import Extractor
from masn.extract.store.schema import VideoRecord
from masn.pipeline.answering.answer import QUESTION_CHARS, answer_record, answer_video, answer_view
from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.commands import answer as command
from masn.pipeline.qa.text import QUESTION_WIDTH, clean_tokens
from tests.builders import COARSE_EXTRACTION, QUESTION, SAMPLE_VIDEO, read_png

# 100,000 characters, 16,667 words: the model reads 20 of them.
LONG = ("what is the man doing ? " * 4200)[:100_000]


_LOADED: dict[str, Extractor] = {}  # random networks, built once for the module


@pytest.fixture
def extracted(monkeypatch: pytest.MonkeyPatch, record: VideoRecord) -> list[Path]:
    """Extraction stood in for by the shared record; returns the videos asked for."""
    asked: list[Path] = []
    load = Extractor.load

    def loaded(*args, **kwargs) -> Extractor:
        if "networks" not in _LOADED:
            _LOADED["networks"] = load(*args, **kwargs)
        return _LOADED["networks"]

    def extract(extractor: Extractor, video: Path) -> VideoRecord:
        asked.append(video)
        return record

    monkeypatch.setattr(Extractor, "load", staticmethod(loaded))
    monkeypatch.setattr(Extractor, "extract", extract)
    return asked


def _settings(checkpoint: Path, **values) -> AnswerSettings:
    return AnswerSettings(
        **{
            "video": SAMPLE_VIDEO,
            "question": QUESTION,
            "checkpoint": checkpoint,
            "random_weights": True,
            "device": "cpu",
            "features": COARSE_EXTRACTION,
            **values,
        }
    )


def test_the_answer_is_printed_before_the_figure_which_goes_under_the_run_folder(
    checkpoints, extracted, tmp_path, monkeypatch, capsys
):
    """The figure was written before the JSON, so a figure that failed lost the answer, and by
    default it went to ./<stem>.answer.png. Now: the JSON first; a full disk at the figure is
    one line (DiskFull) after it; the default figure lies under the checkpoint's run folder."""
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = Path(shutil.copy(checkpoints["open_ended"], run / "best.pt"))
    figure = run / "answers" / f"{SAMPLE_VIDEO.stem}.answer.png"
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    savefig = Figure.savefig

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(DiskFull, match=f"^the disk is full: writing {re.escape(str(figure))} "):
        command.run(_settings(checkpoint))
    result = json.loads(capsys.readouterr().out)  # printed before the figure failed
    assert result["figure"] == str(figure) and result["question"] == QUESTION
    assert result["answer"] == result["top"][0][0] and not figure.exists()
    monkeypatch.setattr(Figure, "savefig", savefig)
    assert command.run(_settings(checkpoint)) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == result["answer"]
    read_png(figure)
    assert os.listdir(here) == []  # nothing in the current folder


def test_a_read_only_figure_folder_is_refused_before_extracting(checkpoints, extracted, caplog):
    folder = Path("/sys") if os.geteuid() == 0 else None  # chmod does not stop root
    if folder is None:
        pytest.skip("a read-only folder for non-root users: see the root case")
    with pytest.raises(InvalidInput, match=r"^masn answer cannot write its figure: cannot create"):
        answer_video(_settings(checkpoints["open_ended"], out=folder / "figures" / "a.png"))
    assert extracted == []  # refused before the slow extraction


def test_a_100000_character_question_is_cut_to_the_models_limit_with_one_warning(
    predictors, record, caplog
):
    predictor = predictors["open_ended"]
    with caplog.at_level(logging.WARNING):
        answer = answer_record(predictor, record, LONG)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"the question has {len(clean_tokens(LONG))} words; the model reads its first "
        f"{QUESTION_WIDTH}, the rest is left out: 'what is the man doing ? what"
    )
    assert answer.words == clean_tokens(LONG)[:QUESTION_WIDTH]
    assert answer.question == " ".join(clean_tokens(LONG)[:QUESTION_WIDTH])
    same = answer_record(predictor, record, answer.question)  # what the model read
    assert same.top == answer.top and same.alpha == answer.alpha
    names = predictor.model.config.fusion_attentions
    view = answer_view(LONG, answer, names, record, None)
    assert view.question == answer.question  # the figure shows what the model read
    endless = answer_record(predictor, record, "x" * 100_000)  # one word, read as UNK
    assert len(endless.question) == QUESTION_CHARS and endless.question.endswith("…")
