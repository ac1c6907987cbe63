"""The Python API for trained models: ``masn.load`` and ``TrainedModel.answer`` / ``figure``,
on the bundled sample video (features shared by the package's conftest)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import masn
from masn.errors import InvalidInput, MissingInput
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.run.one_video import Extractor
from masn.extract.show import frames_at
from masn.pipeline.answering.answer import answer_record
from masn.pipeline.answering.trained_model import TrainedModel
from tests.builders import (
    ANSWERS,
    CANDIDATES,
    CHECKPOINT_FRAMES,
    COARSE_EXTRACTION,
    QUESTION,
    SAMPLE_VIDEO,
    make_checkpoint,
    texts,
    titled,
    transcode,
)


def test_load_takes_a_checkpoint_or_a_run_folder(checkpoints, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoints["open_ended"], run / "best.pt")
    from_file = masn.load(checkpoints["open_ended"], device="cpu")
    from_run = masn.load(run, device="cpu")
    assert isinstance(from_run, TrainedModel) and from_run.device == torch.device("cpu")
    assert (from_run.head, from_run.task, from_run.answers) == ("open_ended", "custom", ANSWERS)
    assert not from_run.predictor.model.training
    first, second = from_file.predictor.model, from_run.predictor.model
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert masn.load(checkpoints["count"], device="cpu").answers == ()
    with pytest.raises(MissingInput, match=r"has no best\.pt"):
        masn.load(tmp_path, device="cpu")
    with pytest.raises(MissingInput, match="no checkpoint at"):
        masn.load(tmp_path / "missing.pt", device="cpu")


def test_answer_on_features_is_what_masn_answer_computes(checkpoints, predictors, record):
    for head, extra in (("open_ended", None), ("count", None), ("multiple_choice", CANDIDATES)):
        model = masn.load(checkpoints[head], device="cpu")
        result = model.answer(record, QUESTION, extra)
        expected = answer_record(predictors[head], record, QUESTION, extra)
        assert (result.answer, result.top, result.alpha) == (
            expected.answer,
            expected.top,
            expected.alpha,
        )
        for name, attention in expected.attention.items():
            np.testing.assert_array_equal(result.attention[name], attention)
    multiple_choice = masn.load(checkpoints["multiple_choice"], device="cpu")
    with pytest.raises(InvalidInput, match="--candidates"):
        multiple_choice.answer(record, QUESTION)


def test_answer_on_a_video_file_extracts_it_first(checkpoints, tmp_path, monkeypatch):
    """A 1-s cut of the sample video: one sampled frame, extracted by the given extractor."""
    clip = tmp_path / "clip.mp4"
    transcode(SAMPLE_VIDEO, clip, "libx264", 1.0, width=320)
    extractor = Extractor(FeatureNetworks.random(COARSE_EXTRACTION), torch.device("cpu"))
    extracted = []
    extract = Extractor.extract
    monkeypatch.setattr(
        Extractor,
        "extract",
        lambda self, video: extracted.append(extract(self, video)) or extracted[-1],
    )
    model = masn.load(checkpoints["open_ended"], device="cpu")
    result = model.answer(clip, QUESTION, extractor=extractor)
    (features,) = extracted
    assert features.key == "clip.mp4" and features.appearance.shape == (1, 2048)
    assert result.top == model.answer(features, QUESTION).top
    assert result.answer in ANSWERS


def test_a_model_for_other_features_refuses_a_video_before_extracting(folder, tmp_path):
    narrow = masn.load(make_checkpoint(folder, "open_ended", width=64), device="cpu")
    with pytest.raises(InvalidInput, match=r"width 64 / 64.*2048 / 2048"):
        narrow.answer(tmp_path / "never-read.mp4", QUESTION)


def test_figure_shows_the_answer_and_the_frames_it_read(checkpoints, record):
    model = masn.load(checkpoints["open_ended"], device="cpu")
    result = model.answer(record, QUESTION)
    figure = model.figure(record, QUESTION, result, fps=COARSE_EXTRACTION.fps, note="a note")
    assert figure.get_suptitle() == QUESTION
    frames = frames_at(SAMPLE_VIDEO, record.frame_times[:CHECKPOINT_FRAMES], 6.0, "pyav")
    drawn = titled(figure, "frame ")
    assert len(drawn) == CHECKPOINT_FRAMES
    for index, axis in enumerate(drawn):
        np.testing.assert_array_equal(axis.images[0].get_array(), frames[index])
    (top,) = titled(figure, "top-3 answers")
    assert texts(top.get_yticklabels()) == [text for text, _ in result.top]
    assert any("a note" in text.get_text() for sub in figure.subfigs for text in sub.texts)
