"""The `masn answer` figure: attention blocks, what each panel shows (titles, word ticks, images,
bars, boxes and labels), layout variants and atomic writing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from masn.pipeline.answering.figure import (
    APPEARANCE_COLOUR,
    CHOSEN_COLOUR,
    MAX_BOXES,
    MOTION_COLOUR,
    NO_FUSION,
    OTHER_COLOUR,
    STREAM_COLOURS,
    TITLES,
    AnswerView,
    answer_figure,
    draw_answer,
    pick_frames,
    shown_maps,
    word_block,
)
from tests.builders import (
    blank_edges,
    box_corners,
    contains,
    laid_out,
    read_png,
    texts,
    titled,
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


def panels(figure: Figure) -> list[str]:
    """The kind of each axis of an answer figure, in drawing order, told by its title."""
    kinds = []
    for axis in figure.axes:
        title = axis.get_title()
        if title.startswith("frame "):
            kinds.append("frame")
        elif title.split("\n")[0] in TITLES.values():
            kinds.append("map")
        elif title.startswith("α"):
            kinds.append("alpha")
        elif title.endswith("answers"):
            kinds.append("answers")
        elif axis.get_ylabel() == "attention weight":
            kinds.append("colour bar")
        else:
            kinds.append(texts(axis.texts)[0])
    return kinds


def word_ticks(words: list[str]) -> list[str]:
    return [f"A:{word}" for word in words] + [f"M:{word}" for word in words]


FULL = ["frame"] * 6 + ["map"] * 3 + ["colour bar", "alpha", "answers"]


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


# --- what the figure shows --------------------------------------------------------------------


def test_the_figure_shows_question_note_frames_maps_alpha_and_answers():
    view = make_view()
    figure = answer_figure(view)
    assert figure.get_suptitle() == view.question
    assert texts(figure.subfigs[0].texts) == [view.note]
    alpha = [f"\nα = {weight:.3f}" for weight in view.alpha]
    assert [axis.get_title() for axis in figure.axes] == [
        *(f"frame {i}, t = {i / 6:.2f} s" for i in range(6)),
        "appearance-centred" + alpha[0],
        "motion-centred" + alpha[1],
        "all-mixed" + alpha[2],
        "",  # the colour bar of the maps
        "α (question-guided)",
        "top-5 answers",
    ]
    assert panels(figure) == FULL


def test_the_maps_are_the_real_word_blocks_with_the_question_words_as_ticks():
    view = make_view()
    figure = answer_figure(view)
    blocks = {name: word_block(view.attention[name], len(WORDS), WIDTH) for name in NAMES}
    vmax = max(float(block.max()) for block in blocks.values())
    colours = [APPEARANCE_COLOUR] * len(WORDS) + [MOTION_COLOUR] * len(WORDS)
    for name in NAMES:
        (axis,) = titled(figure, TITLES[name])
        (image,) = axis.images
        np.testing.assert_array_equal(image.get_array(), blocks[name])
        assert image.get_clim() == (0.0, vmax)
        for ticks in (axis.get_xticklabels(), axis.get_yticklabels()):
            assert texts(ticks) == word_ticks(WORDS)
            assert [tick.get_color() for tick in ticks] == colours


def test_the_alpha_bars_are_the_alpha_values():
    view = make_view()
    (axis,) = titled(answer_figure(view), "α")
    assert [bar.get_height() for bar in axis.patches] == pytest.approx(list(view.alpha))
    assert texts(axis.get_xticklabels()) == ["app.", "mot.", "all"]
    assert texts(axis.texts) == [f"{weight:.2f}" for weight in view.alpha]


def test_the_top_answers_are_bars_of_their_scores_best_on_top():
    (axis,) = titled(answer_figure(make_view()), "top-5 answers")
    assert texts(axis.get_yticklabels()) == [text for text, _ in TOP]
    assert [bar.get_width() for bar in axis.patches] == pytest.approx([s for _, s in TOP])
    assert [bar.get_y() for bar in axis.patches] == pytest.approx([i - 0.4 for i in range(5)])
    assert axis.yaxis_inverted()
    assert texts(axis.texts) == [f"{score:.3f}" for _, score in TOP]


def test_the_frames_are_drawn_with_their_first_boxes_and_labels():
    view = make_view()
    frames = titled(answer_figure(view), "frame ")
    assert len(frames) == len(view.frames)
    for index, axis in enumerate(frames):
        (image,) = axis.images
        np.testing.assert_array_equal(image.get_array(), view.frames[index])
        np.testing.assert_allclose(box_corners(axis), view.boxes[index, :MAX_BOXES])
        assert texts(axis.texts) == view.labels[index][:MAX_BOXES]


def test_empty_boxes_are_skipped_and_long_labels_shortened():
    view = make_view()
    boxes = view.boxes.copy()
    boxes[:, 1] = 0.0  # a padding box among the first ones
    labels = [["weathered wooden bench", *row[1:]] for row in view.labels]
    frames = titled(answer_figure(make_view(boxes=boxes, labels=labels)), "frame ")
    for index, axis in enumerate(frames):
        kept = [0, *range(2, MAX_BOXES)]
        np.testing.assert_allclose(box_corners(axis), boxes[index, kept])
        assert texts(axis.texts) == ["weathered woo…", *(labels[index][k] for k in kept[1:])]


# --- layout and colours ------------------------------------------------------------------------


def two_wide_frames() -> AnswerView:
    """The quick demo's shape: two 192 x 128 frames, a box at each top corner of each."""
    view = make_view()
    frames = np.random.default_rng(5).integers(0, 256, size=(2, 128, 192, 3), dtype=np.uint8)
    boxes = np.tile([[0.0, 0.0, 60.0, 40.0], [170.0, 0.0, 192.0, 30.0]], (2, 1, 1))
    return make_view(frames=frames, boxes=boxes, frame_times=view.frame_times[:2])


LAYOUTS = {"six": make_view, "two-wide": two_wide_frames}


@pytest.mark.parametrize("make", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_text_is_inside_the_figure_and_each_box_label_on_its_frame(make):
    """No clipped text: box labels at a frame's top or right edge stay on the frame (not over
    its title, not cut at its edge) and nothing leaves the figure."""
    figure = answer_figure(make())
    renderer = laid_out(figure)
    assert contains(figure.bbox_inches, figure.get_tightbbox(renderer), slack=0.01)
    frames = titled(figure, "frame ")
    assert sum(len(axis.texts) for axis in frames) >= 2 * len(frames)
    for axis in frames:
        frame = axis.get_window_extent(renderer)
        title = axis.title.get_window_extent(renderer)
        for label in axis.texts:
            extent = label.get_window_extent(renderer)
            assert contains(frame, extent), label.get_text()
            assert not extent.overlaps(title), label.get_text()


@pytest.mark.parametrize("make", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_frames_sit_side_by_side_centred_and_the_png_has_no_blank_margin(make, tmp_path):
    """Frames that cannot fill the width (two wide frames, capped in height) are centred with
    no gap between them; the rendered figure has no blank margin."""
    figure = answer_figure(make())
    renderer = laid_out(figure)
    frames = [axis.get_window_extent(renderer) for axis in titled(figure, "frame ")]
    gaps = [right.x0 - left.x1 for left, right in itertools.pairwise(frames)]
    assert max(gaps) < 0.15 * figure.dpi  # inches
    left, right = frames[0].x0, figure.bbox.x1 - frames[-1].x1
    assert abs(left - right) < 0.3 * figure.dpi
    image = read_png(draw_answer(make(), tmp_path / "answer.png"))
    assert max(blank_edges(image).values()) < 0.01


def test_no_bar_says_right_or_wrong():
    """The figure does not know the right answer: the model's top answer is dark grey, the
    others light grey (no red or green); alpha's bars take their stream's colour."""
    figure = answer_figure(make_view())
    (answers,) = titled(figure, "top-5 answers")
    colours = [to_hex(bar.get_facecolor()) for bar in answers.patches]
    assert colours == [CHOSEN_COLOUR.lower()] + [OTHER_COLOUR.lower()] * 4
    assert all(len(set(to_rgb(colour))) == 1 for colour in colours)  # greys
    (alpha,) = titled(figure, "α")
    colours = [to_hex(bar.get_facecolor()) for bar in alpha.patches]
    assert colours == [STREAM_COLOURS[name].lower() for name in NAMES]


# --- drawing -----------------------------------------------------------------------------------


def test_draws_a_png_into_new_folders(tmp_path):
    out = draw_answer(make_view(), str(tmp_path / "a" / "b" / "answer.png"))
    assert out == tmp_path / "a" / "b" / "answer.png"
    read_png(out)


@pytest.mark.parametrize(
    ("changes", "kinds"),
    [
        ({"frames": None, "boxes": None, "frame_times": None, "labels": None}, FULL[6:]),
        (
            {"attention": {}, "alpha": None, "attention_names": ()},
            [*FULL[:6], NO_FUSION, "answers"],
        ),
        ({"note": "", "labels": None, "frame_times": None}, FULL),
        ({"boxes": None}, FULL),
        ({"top": []}, FULL),
        ({"top": [("3", 2.7)]}, FULL),  # a count answer: one unbounded score
    ],
    ids=["no-frames", "no-attention", "no-note", "no-boxes", "no-answers", "count"],
)
def test_variants_draw(tmp_path, changes, kinds):
    view = make_view(**changes)
    read_png(draw_answer(view, tmp_path / "answer.png"))
    figure = answer_figure(view)
    assert panels(figure) == kinds
    frames = titled(figure, "frame ")
    if view.note:
        assert texts(figure.subfigs[0].texts) == [view.note]
    else:
        assert all(not panel.texts for panel in figure.subfigs)
    if view.frames is None:
        assert not frames
    elif view.frame_times is None:
        assert [axis.get_title() for axis in frames] == [f"frame {i}" for i in range(6)]
    if view.boxes is None:
        assert all(not axis.patches and not axis.texts for axis in frames)
    elif view.labels is None:
        assert all(len(axis.patches) == MAX_BOXES and not axis.texts for axis in frames)
    (answers,) = titled(figure, "top-") or titled(figure, "answers")
    assert [bar.get_width() for bar in answers.patches] == [score for _, score in view.top]
    if view.top:
        assert texts(answers.get_yticklabels()) == [text for text, _ in view.top]
    else:
        assert answers.get_title() == "answers" and texts(answers.texts) == ["no answers"]


def test_one_frame_draws(tmp_path):
    view = make_view()
    one = make_view(
        frames=view.frames[:1],
        boxes=view.boxes[:1],
        frame_times=view.frame_times[:1],
        labels=view.labels[:1],
    )
    read_png(draw_answer(one, tmp_path / "answer.png"))
    figure = answer_figure(one)
    assert panels(figure) == FULL[5:]
    (frame,) = titled(figure, "frame ")
    assert frame.get_title() == "frame 0, t = 0.00 s"
    np.testing.assert_array_equal(frame.images[0].get_array(), view.frames[0])


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
    figure = answer_figure(view)
    picked = pick_frames(35)
    drawn = titled(figure, "frame ")
    assert [axis.get_title() for axis in drawn] == [f"frame {i}, t = {i / 6:.2f} s" for i in picked]
    for index, axis in zip(picked, drawn, strict=True):
        np.testing.assert_array_equal(axis.images[0].get_array(), frames[index])
        np.testing.assert_allclose(box_corners(axis), view.boxes[index])
    for name in NAMES:
        (axis,) = titled(figure, TITLES[name])
        assert texts(axis.get_xticklabels()) == word_ticks(words)
        assert axis.images[0].get_array().shape == (2 * WIDTH, 2 * WIDTH)


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
    figure = answer_figure(view)
    kinds = ["map"] * len(names) + ["colour bar"] * bool(names) + ["alpha"] * bool(names)
    assert panels(figure) == FULL[:6] + (kinds or [NO_FUSION]) + ["answers"]
    for name, block, weight in maps:
        (axis,) = titled(figure, TITLES[name])
        np.testing.assert_array_equal(axis.images[0].get_array(), block)
        assert axis.get_title() == f"{TITLES[name]}\nα = {weight:.3f}"
    if names:
        (axis,) = titled(figure, "α")
        heights = [bar.get_height() for bar in axis.patches]
        assert heights == pytest.approx(out.alpha[0].tolist())
