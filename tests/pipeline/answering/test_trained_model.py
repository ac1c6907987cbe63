"""The Python API for trained models: ``masn.load`` and ``TrainedModel.answer`` / ``figure``,
on the bundled sample video (features shared by the package's conftest)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

import masn
from masn.errors import InvalidInput, MissingInput
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.run.one_video import Extractor
from masn.extract.show import frames_at
from masn.extract.store.schema import Provenance
from masn.pipeline.answering.answer import answer_record
from masn.pipeline.answering.trained_model import TrainedModel
from masn.pipeline.benchmarks.stand_ins import StandInNetworks
from tests.builders import (
    ANSWERS,
    CANDIDATES,
    CHECKPOINT_FRAMES,
    COARSE_EXTRACTION,
    QUESTION,
    SAMPLE_VIDEO,
    TINY_EXTRACTION,
    make_checkpoint,
    texts,
    titled,
    transcode,
)

WIDTHS = r"widths 64 / 64 / 64 / 64 \(appearance, .*2048 / 2048 / 2048 / 2048"


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
    with pytest.raises(InvalidInput, match=r"candidates=\['answer one'"):
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


def test_a_video_file_is_extracted_as_the_training_features_were(folder, tmp_path, monkeypatch):
    """The checkpoint records the store's provenance (CLIP-wide or random features alike): a
    video file is extracted with those settings and the same random networks."""
    clip = tmp_path / "clip.mp4"
    transcode(SAMPLE_VIDEO, clip, "libx264", 1.0, width=320)
    trained_on = Provenance.new(
        COARSE_EXTRACTION.to_dict(), FeatureNetworks.random(COARSE_EXTRACTION, seed=3).weights
    )
    model = masn.load(make_checkpoint(folder, "open_ended", features=trained_on), device="cpu")
    used = []
    extract = Extractor.extract
    monkeypatch.setattr(
        Extractor, "extract", lambda self, video: used.append(self) or extract(self, video)
    )
    result = model.answer(clip, QUESTION)
    (extractor,) = used
    assert extractor.config == COARSE_EXTRACTION
    assert set(extractor.networks.weights.values()) == {"random (seed 3)"}
    same = Extractor(FeatureNetworks.random(COARSE_EXTRACTION, seed=3), torch.device("cpu"))
    assert result.top == model.answer(extract(same, clip), QUESTION).top


def test_a_model_for_other_features_refuses_a_video_before_extracting(folder, tmp_path):
    narrow = masn.load(make_checkpoint(folder, "open_ended", width=64), device="cpu")
    with pytest.raises(InvalidInput, match=WIDTHS):
        narrow.answer(tmp_path / "never-read.mp4", QUESTION)


def test_features_made_otherwise_are_refused_and_random_ones_warned(folder, record, caplog):
    """The checkpoint's training features: COARSE_EXTRACTION with random networks (seed 3).
    Other sizes or published weights are refused in one line with the Python fix; networks of
    another seed only warn; numeric precision is not compared."""
    trained = Provenance.new(COARSE_EXTRACTION.to_dict(), record.provenance.weights)
    trained = replace(trained, weights={role: "random (seed 3)" for role in trained.weights})
    model = masn.load(make_checkpoint(folder, "open_ended", features=trained), device="cpu")

    def made(config=COARSE_EXTRACTION, weights=None):
        return replace(
            record, provenance=Provenance.new(config.to_dict(), weights or trained.weights)
        )

    with pytest.raises(InvalidInput) as refused:
        model.answer(made(replace(COARSE_EXTRACTION, frame_size=224, sample_every=4)), QUESTION)
    message = str(refused.value)
    assert message == (
        "the features of 'bigbuckbunny.mp4' were made otherwise than the model's training "
        "features (sample_every 4 (trained on 12); frame_size 224 (trained on 112)): extract the "
        "video with model.extractor(), which makes features like the training ones"
    )
    published = {role: f"{role}.pt (sha256 {role})" for role in trained.weights}
    other = {role: f"{role}.pt (sha256 other)" for role in trained.weights}
    checkpoint = make_checkpoint(folder, "count", features=replace(trained, weights=published))
    with pytest.raises(InvalidInput, match=r"appearance weights appearance\.pt \(sha256 other\)"):
        masn.load(checkpoint, device="cpu").answer(made(weights=other), QUESTION)
    assert not caplog.records
    caplog.set_level(logging.WARNING)
    answered = model.answer(record, QUESTION)  # random networks of seed 0
    model.answer(made(weights=published), QUESTION)
    assert [warning.getMessage() for warning in caplog.records] == [
        "the features of 'bigbuckbunny.mp4' come from other networks than the model's training "
        f"features ({', '.join(sorted(trained.weights))} {made_by} (trained on random (seed 3))): "
        "the answer means nothing"
        for made_by in ("random (seed 0)", "published")
    ]
    bf16 = made(replace(COARSE_EXTRACTION, precision="bf16", feature_dtype="float32"))
    assert model.answer(bf16, QUESTION).top == answered.top and len(caplog.records) == 2


def test_an_extractor_for_other_features_is_refused_before_it_extracts(folder, tmp_path):
    trained = Provenance.new(COARSE_EXTRACTION.to_dict(), {"appearance": "random (seed 0)"})
    model = masn.load(make_checkpoint(folder, "open_ended", features=trained), device="cpu")
    extractor = Extractor(StandInNetworks(TINY_EXTRACTION), torch.device("cpu"))
    with pytest.raises(
        InvalidInput,
        match=r"the extractor's features were made otherwise.*"
        r"frame_size 32 \(trained on 112\).*model\.extractor\(\)",
    ):
        model.answer(tmp_path / "never-read.mp4", QUESTION, extractor=extractor)


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
    notes = " ".join(text.get_text() for sub in figure.subfigs for text in sub.texts)
    assert "RANDOM WEIGHTS: features and answers are meaningless" in notes and "a note" in notes
