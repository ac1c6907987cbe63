"""`masn answer`: the real sample video extracted on the fly, small checkpoints of each head.

CPU extraction is slow (about 5 s per sampled frame here, the detector most of it), so the
module extracts the video once with a coarse sampling (every 12th 6-fps frame: 3 sampled
frames) and shares it; the command line runs once end to end on a 1.5-s cut of the video.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from masn import caller
from masn.extract.networks.vocab import attribute_names, object_names
from masn.extract.run.one_video import Extractor
from masn.extract.store.schema import VideoRecord
from masn.pipeline.answering.answer import (
    RANDOM_NOTE,
    answer_record,
    answer_video,
    answer_view,
    frames_at,
    video_features,
)
from masn.pipeline.answering.figure import (
    MAX_BOXES,
    TITLES,
    AnswerView,
    answer_figure,
    draw_answer,
    word_block,
)
from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.cli import main
from masn.pipeline.qa.text import clean_tokens
from masn.pipeline.training.checkpoint import load_predictor
from tests.builders import (
    ANSWERS,
    CANDIDATES,
    CHECKPOINT_FRAMES,
    COARSE_EXTRACTION,
    QUESTION,
    SAMPLE_VIDEO,
    SMALL_FLAGS,
    box_corners,
    make_checkpoint,
    read_png,
    texts,
    titled,
    transcode,
)

WIDTHS = r"widths 64 / 64 / 64 / 64 \(appearance, .*2048 / 2048 / 2048 / 2048"


def test_the_extracted_record_has_real_features_boxes_and_labels(record):
    length = record.appearance.shape[0]
    assert length > CHECKPOINT_FRAMES  # the checkpoints read only the first T of them
    assert record.appearance.shape == (length, 2048) and record.motion.shape == (length, 2048)
    assert record.appearance_objects.shape == (length, 10, 2048)
    assert record.boxes.shape == (length, 10, 4) and record.object_labels.shape == (length, 10)
    assert Path(record.path) == SAMPLE_VIDEO.resolve()


def test_video_features_cut_and_pad_like_training(record):
    length = record.appearance.shape[0]
    video, chosen = video_features(record, CHECKPOINT_FRAMES, "first")
    assert list(chosen) == list(range(CHECKPOINT_FRAMES)) and video.appearance.shape == (
        1,
        CHECKPOINT_FRAMES,
        2048,
    )
    np.testing.assert_array_equal(
        video.appearance[0].numpy(), record.appearance[:CHECKPOINT_FRAMES]
    )
    video, chosen = video_features(record, length + 3, "uniform")
    assert len(chosen) == length and int(video.lengths[0]) == length
    assert video.boxes.shape == (1, length + 3, 10, 6)
    assert not video.motion_objects[0, length:].any()  # zero padding
    video, _ = video_features(record, 2, "uniform")
    np.testing.assert_array_equal(video.motion[0, -1].numpy(), record.motion[-1])


def test_open_ended_answer_top_scores_alpha_and_attention(predictors, record):
    answer = answer_record(predictors["open_ended"], record, QUESTION)
    assert answer.answer in ANSWERS and answer.answer == answer.top[0][0]
    scores = [score for _, score in answer.top]
    assert len(answer.top) == 3 and scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1 + 1e-4
    assert list(answer.alpha) == ["appearance", "motion", "all"]
    assert sum(answer.alpha.values()) == pytest.approx(1.0, abs=1e-5)
    assert answer.words == clean_tokens(QUESTION) and not answer.unknown
    assert all(m.shape == (40, 40) for m in answer.attention.values())
    np.testing.assert_array_equal(answer.chosen, np.arange(CHECKPOINT_FRAMES))


def test_unknown_words_are_reported(predictors, record, caplog):
    answer = answer_record(predictors["open_ended"], record, "what is the zebra doing ?")
    assert answer.unknown == ("zebra",) and "zebra" in caplog.text


def test_count_answer_is_a_rounded_clamped_integer(predictors, record):
    answer = answer_record(predictors["count"], record, "how many times does he jump ?")
    assert isinstance(answer.answer, int) and 1 <= answer.answer <= 10
    assert answer.output is not None
    assert answer.answer == min(10, max(1, round(answer.output)))
    assert answer.top == [(answer.answer, pytest.approx(answer.output, abs=1e-5))]


def test_multiple_choice_picks_a_candidate_and_needs_candidates(predictors, record):
    predictor = predictors["multiple_choice"]
    answer = answer_record(predictor, record, QUESTION, CANDIDATES)
    assert answer.answer in CANDIDATES and len(answer.top) == 3
    assert sorted(text for text, _ in answer.top) == sorted(CANDIDATES)
    assert answer.words == clean_tokens(f"{QUESTION} {answer.answer}")
    assert sum(answer.alpha.values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(
        ValueError, match=r"e\.g\. candidates=\['answer one', 'answer two', \.\.\.\]$"
    ):
        answer_record(predictor, record, QUESTION)
    with pytest.raises(ValueError, match="at least two"):
        answer_record(predictor, record, QUESTION, ["run"])
    with pytest.raises(
        ValueError, match="has an open-ended head; candidates are for multiple-choice"
    ):
        answer_record(predictors["open_ended"], record, QUESTION, CANDIDATES)


def test_feature_widths_must_match_the_model(folder, record, tmp_path):
    narrow = make_checkpoint(folder, "open_ended", width=64)
    with pytest.raises(ValueError, match=WIDTHS):
        answer_record(load_predictor(narrow), record, QUESTION)
    # answer_video refuses it before extracting anything
    with pytest.raises(ValueError, match=WIDTHS):
        answer_video(
            AnswerSettings(
                video=SAMPLE_VIDEO,
                question=QUESTION,
                checkpoint=narrow,
                out=tmp_path / "x.png",
                random_weights=True,
            )
        )
    assert not (tmp_path / "x.png").exists()


def capture_views(monkeypatch: pytest.MonkeyPatch) -> list[AnswerView]:
    """The views `masn answer` draws from now on (drawn as usual)."""
    views: list[AnswerView] = []

    def drawn(view: AnswerView, out: Path) -> Path:
        views.append(view)
        return draw_answer(view, out)

    monkeypatch.setattr("masn.pipeline.answering.answer.draw_answer", drawn)
    return views


def test_the_figure_shows_the_frames_the_model_read(predictors, record, tmp_path):
    answer = answer_record(predictors["open_ended"], record, QUESTION)
    frames = frames_at(
        record.path, record.frame_times[answer.chosen], COARSE_EXTRACTION.fps, "pyav"
    )
    assert frames.shape == (CHECKPOINT_FRAMES, record.height, record.width, 3)
    names = predictors["open_ended"].model.config.fusion_attentions
    view = answer_view(QUESTION, answer, names, record, frames)
    assert len(view.labels) == CHECKPOINT_FRAMES and len(view.labels[0]) == 10
    assert all(" " in label for label in view.labels[0])  # "attribute object"
    read_png(draw_answer(view, tmp_path / "figure.png"))

    objects, attributes = object_names(), attribute_names()
    figure = answer_figure(view)
    drawn = titled(figure, "frame ")
    assert [axis.get_title() for axis in drawn] == [
        f"frame {i}, t = {t:.2f} s" for i, t in enumerate(record.frame_times[:CHECKPOINT_FRAMES])
    ]
    for index, axis in enumerate(drawn):
        np.testing.assert_array_equal(axis.images[0].get_array(), frames[index])
        np.testing.assert_allclose(box_corners(axis), record.boxes[index, :MAX_BOXES], rtol=1e-6)
        pairs = zip(record.attribute_labels[index], record.object_labels[index], strict=True)
        labels = [f"{attributes[a]} {objects[o]}" for a, o in pairs]
        assert view.labels[index] == labels
        shown = [text if len(text) <= 14 else text[:13] + "…" for text in labels[:MAX_BOXES]]
        assert texts(axis.texts) == shown
    ticks = [f"A:{word}" for word in answer.words] + [f"M:{word}" for word in answer.words]
    for name in names:
        (axis,) = titled(figure, TITLES[name])
        block = word_block(answer.attention[name], len(answer.words), 20)
        np.testing.assert_array_equal(axis.images[0].get_array(), block)
        assert texts(axis.get_xticklabels()) == ticks == texts(axis.get_yticklabels())
    (alpha,) = titled(figure, "α")
    heights = [bar.get_height() for bar in alpha.patches]
    assert heights == pytest.approx([answer.alpha[name] for name in names])
    (top,) = titled(figure, "top-3 answers")
    assert texts(top.get_yticklabels()) == [text for text, _ in answer.top]
    assert [bar.get_width() for bar in top.patches] == [score for _, score in answer.top]


def test_answer_video_draws_the_figure_and_returns_json(
    checkpoints, record, tmp_path, caplog, monkeypatch
):
    """The whole command but the extraction, which the shared record stands in for."""
    used = {}

    def extracted(extractor: Extractor, video: Path) -> VideoRecord:
        used.update(config=extractor.config, weights=extractor.networks.weights)
        used.update(device=extractor.device, video=video)
        return record

    monkeypatch.setattr(Extractor, "extract", extracted)
    views = capture_views(monkeypatch)
    out = tmp_path / "figures" / "mc.png"
    settings = AnswerSettings(
        video=SAMPLE_VIDEO,
        question=QUESTION,
        checkpoint=checkpoints["multiple_choice"],
        out=out,
        random_weights=True,
        device="cpu",
        candidates=tuple(CANDIDATES),
        features=COARSE_EXTRACTION,
    )
    with caller.command_line():  # as `masn answer` runs it: its banner, said once
        result = answer_video(settings)
    assert json.loads(json.dumps(result)) == result
    assert used["config"] == COARSE_EXTRACTION and used["device"] == torch.device("cpu")
    assert used["video"] == SAMPLE_VIDEO
    assert used["weights"]["detector"].startswith("random")
    assert caplog.text.count("RANDOM WEIGHTS") == 1 and "(--random-weights)" in caplog.text
    assert result["answer"] in CANDIDATES and result["candidates"] == CANDIDATES
    assert result["top"][0][0] == result["answer"]
    assert result["figure"] == str(out) and result["random_weights"] is True
    assert (result["sampled_frames"], result["frames_used"]) == (3, CHECKPOINT_FRAMES)
    assert sum(result["alpha"].values()) == pytest.approx(1.0, abs=1e-4)
    read_png(out)
    assert RANDOM_NOTE.startswith("RANDOM WEIGHTS")
    (view,) = views
    assert view.note == RANDOM_NOTE and view.question == QUESTION
    assert view.words == clean_tokens(f"{QUESTION} {result['answer']}")
    assert [[text, score] for text, score in view.top] == result["top"]
    assert list(view.alpha) == pytest.approx(list(result["alpha"].values()), abs=1e-6)
    expected = frames_at(
        SAMPLE_VIDEO, record.frame_times[:CHECKPOINT_FRAMES], COARSE_EXTRACTION.fps, "pyav"
    )
    np.testing.assert_array_equal(view.frames, expected)
    np.testing.assert_array_equal(view.boxes, record.boxes[:CHECKPOINT_FRAMES])


@pytest.mark.slow
def test_cli_extracts_answers_prints_json_and_draws(checkpoints, tmp_path, capsys, monkeypatch):
    """End to end on a 1.5-s cut of the video (3 sampled frames), the figure under the run
    folder of the checkpoint, nothing in the current folder."""
    clip = tmp_path / "clip.mp4"
    transcode(SAMPLE_VIDEO, clip, "libx264", 1.5, width=640)  # half size
    monkeypatch.chdir(tmp_path)
    views = capture_views(monkeypatch)
    command = ["answer", str(clip), QUESTION, "--checkpoint", str(checkpoints["open_ended"])]
    assert main([*command, "--random-weights", "--device", "cpu", *SMALL_FLAGS]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] in ANSWERS and len(result["top"]) == 3
    assert result["video"] == str(clip) and result["question"] == QUESTION
    assert (result["sampled_frames"], result["frames_used"]) == (3, CHECKPOINT_FRAMES)
    figure = checkpoints["open_ended"].parent / "answers" / "clip.answer.png"
    assert Path(result["figure"]) == figure
    read_png(figure)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]
    (view,) = views
    assert view.question == QUESTION and view.words == clean_tokens(QUESTION)
    assert [[text, score] for text, score in view.top] == result["top"]
    assert (
        view.frames.shape == (CHECKPOINT_FRAMES, 360, 640, 3)
        and len(view.labels) == CHECKPOINT_FRAMES
    )


def test_cli_setup_errors_exit_2_with_a_message(checkpoints, tmp_path, caplog, monkeypatch):
    base = [str(SAMPLE_VIDEO), QUESTION, "--random-weights", *SMALL_FLAGS]
    assert main(["answer", *base, "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in caplog.text and "Traceback" not in caplog.text
    caplog.clear()
    mc = ["--checkpoint", str(checkpoints["multiple_choice"])]
    assert main(["answer", *base, *mc]) == 2
    assert "e.g. --candidates 'answer one' 'answer two' ..." in caplog.text
    caplog.clear()
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "no-weights-here"))
    command = [str(SAMPLE_VIDEO), QUESTION, "--checkpoint", str(checkpoints["open_ended"])]
    assert main(["answer", *command]) == 2
    assert "masn weights fetch" in caplog.text and "--random-weights" in caplog.text
