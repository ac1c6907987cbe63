"""The `masn answer` figure: attention blocks, layout variants and atomic writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from masn.pipeline.answering.figure import (
    AnswerView,
    draw_answer,
    pick_frames,
    shown_maps,
    word_block,
)

WIDTH = 20  # token width L
WORDS = ["what", "is", "the", "man", "doing", "on", "stage"]
NAMES = ("appearance", "motion", "all")
TOP = [("dance", 0.41), ("sing", 0.22), ("play guitar", 0.12), ("talk", 0.08), ("jump", 0.03)]


def make_view(seed: int = 0, **changes) -> AnswerView:
    """A view from random arrays: L = 20, n = 7 words, three maps, six 64x96 frames with boxes."""
    rng = np.random.default_rng(seed)
    maps = {name: rng.random((2 * WIDTH, 2 * WIDTH)) for name in NAMES}
    maps = {name: m / m.sum(axis=1, keepdims=True) for name, m in maps.items()}
    logits = rng.normal(size=len(NAMES))
    alpha = np.exp(logits) / np.exp(logits).sum()
    frames = rng.integers(0, 256, size=(6, 64, 96, 3), dtype=np.uint8)
    corners = rng.uniform(0, 40, size=(6, 10, 2))
    sizes = rng.uniform(5, 40, size=(6, 10, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=-1)
    boxes[:, -2:] = 0.0  # padding boxes, which must be skipped
    values = dict(
        question="what is the man doing on stage ?",
        words=list(WORDS),
        top=list(TOP),
        attention=maps,
        alpha=alpha,
        attention_names=NAMES,
        frames=frames,
        boxes=boxes,
        frame_times=np.arange(6) / 6.0,
        labels=[[f"red car {k}" for k in range(10)] for _ in range(6)],
        note="RANDOM WEIGHTS: answers are meaningless",
    )
    values.update(changes)
    return AnswerView(**values)


def read_png(path: Path) -> np.ndarray:
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 300 and image.shape[1] >= 600
    return image


# --- the pure helpers --------------------------------------------------------------------------


def test_word_block_keeps_the_real_words_of_both_halves():
    width, n = 5, 2
    full = np.arange(4 * width * width, dtype=float).reshape(2 * width, 2 * width)
    expected = np.array(
        [
            [full[0, 0], full[0, 1], full[0, 5], full[0, 6]],
            [full[1, 0], full[1, 1], full[1, 5], full[1, 6]],
            [full[5, 0], full[5, 1], full[5, 5], full[5, 6]],
            [full[6, 0], full[6, 1], full[6, 5], full[6, 6]],
        ]
    )
    np.testing.assert_array_equal(word_block(full, n, width), expected)


def test_word_block_of_a_full_length_question_is_the_whole_map():
    full = np.random.default_rng(1).random((8, 8))
    np.testing.assert_array_equal(word_block(full, 4, 4), full)


@pytest.mark.parametrize(("shape", "n"), [((10, 10), 6), ((10, 10), 0), ((10, 8), 3)])
def test_word_block_rejects_bad_shapes_and_lengths(shape, n):
    with pytest.raises(ValueError):
        word_block(np.zeros(shape), n, 5)


def test_shown_maps_are_2n_square_in_alpha_order_with_their_weights():
    view = make_view()
    reordered = {name: view.attention[name] for name in reversed(NAMES)}
    maps = shown_maps(make_view(attention=reordered))
    assert [name for name, _, _ in maps] == list(NAMES)
    n = len(WORDS)
    for index, (name, block, weight) in enumerate(maps):
        assert block.shape == (2 * n, 2 * n)
        np.testing.assert_array_equal(block, word_block(view.attention[name], n, WIDTH))
        assert weight == pytest.approx(view.alpha[index])


def test_shown_maps_rejects_alpha_of_the_wrong_length():
    with pytest.raises(ValueError, match="alpha"):
        shown_maps(make_view(alpha=np.array([0.5, 0.5])))


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, [0]), (6, [0, 1, 2, 3, 4, 5]), (8, list(range(8))), (16, [0, 2, 4, 6, 9, 11, 13, 15])],
)
def test_pick_frames_spreads_at_most_eight_evenly(count, expected):
    assert pick_frames(count).tolist() == expected


# --- drawing -----------------------------------------------------------------------------------


def test_draws_a_png_into_new_folders(tmp_path):
    out = draw_answer(make_view(), str(tmp_path / "a" / "b" / "answer.png"))
    assert out == tmp_path / "a" / "b" / "answer.png"
    read_png(out)


@pytest.mark.parametrize(
    "changes",
    [
        {"frames": None, "boxes": None, "frame_times": None, "labels": None},
        {"attention": {}, "alpha": None, "attention_names": ()},
        {"note": "", "labels": None, "frame_times": None},
        {"boxes": None},
        {"top": []},
        {"top": [("3", 2.7)]},  # a count answer: one unbounded score
    ],
    ids=["no-frames", "no-attention", "no-note", "no-boxes", "no-answers", "count"],
)
def test_variants_draw(tmp_path, changes):
    read_png(draw_answer(make_view(**changes), tmp_path / "answer.png"))


def test_one_frame_draws(tmp_path):
    view = make_view()
    one = make_view(
        frames=view.frames[:1],
        boxes=view.boxes[:1],
        frame_times=view.frame_times[:1],
        labels=view.labels[:1],
    )
    read_png(draw_answer(one, tmp_path / "answer.png"))


def test_many_frames_and_a_long_question_draw(tmp_path):
    rng = np.random.default_rng(3)
    words = [f"word{i}" for i in range(WIDTH)]
    frames = rng.integers(0, 256, size=(35, 48, 64, 3), dtype=np.uint8)
    view = make_view(
        question=" ".join(words),
        words=words,
        frames=frames,
        boxes=np.tile([[[2.0, 2.0, 30.0, 20.0]]], (35, 3, 1)),
        frame_times=np.arange(35) / 6.0,
        labels=None,
    )
    read_png(draw_answer(view, tmp_path / "answer.png"))


def test_an_existing_figure_is_replaced_atomically(tmp_path):
    out = tmp_path / "answer.png"
    out.write_bytes(b"old")
    draw_answer(make_view(), out)
    read_png(out)
    assert [p.name for p in tmp_path.iterdir()] == ["answer.png"]


def test_a_failed_draw_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "answer.png"
    out.write_bytes(b"old")
    with pytest.raises(ValueError):
        draw_answer(make_view(alpha=np.array([1.0])), out)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["answer.png"]


# --- a real MASN's output fits -----------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["full", "dual", "single", "none"])
def test_draws_a_real_masn_output(tmp_path, fusion):
    from masn.model import MASN, MASNConfig, VideoFeatures

    config = MASNConfig(
        vocab_size=50,
        task="open_ended",
        num_answers=5,
        hidden=32,
        appearance_dim=16,
        motion_dim=16,
        location_dim=8,
        fusion=fusion,
    )
    torch.manual_seed(0)
    model = MASN(config).eval()
    frames, objects = 6, 4
    video = VideoFeatures(
        appearance=torch.randn(1, frames, 16),
        motion=torch.randn(1, frames, 16),
        appearance_objects=torch.randn(1, frames, objects, 16),
        motion_objects=torch.randn(1, frames, objects, 16),
        boxes=torch.rand(1, frames, objects, 6),
        lengths=torch.tensor([frames]),
    )
    n = len(WORDS)
    tokens = torch.zeros(1, WIDTH, dtype=torch.long)
    tokens[0, :n] = torch.arange(2, 2 + n)
    with torch.no_grad():
        out = model(video, tokens, torch.tensor([n]), return_attention=True)

    probabilities = torch.softmax(out.output[0], dim=-1)
    scores, classes = probabilities.topk(5)
    names = config.fusion_attentions
    view = make_view(
        top=[(f"answer {c}", float(s)) for c, s in zip(classes, scores, strict=True)],
        attention={name: m[0].numpy() for name, m in out.attention.items()},
        alpha=None if out.alpha is None else out.alpha[0].numpy(),
        attention_names=names,
    )
    maps = shown_maps(view)
    assert [name for name, _, _ in maps] == list(names)
    for _, block, _ in maps:
        assert block.shape == (2 * n, 2 * n)
        # each real word's row is a distribution over the real words it may attend to
        np.testing.assert_allclose(block.sum(axis=1), 1.0, atol=1e-5)
    read_png(draw_answer(view, tmp_path / "answer.png"))
