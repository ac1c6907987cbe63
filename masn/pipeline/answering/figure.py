"""The figure of `masn answer`: one question's fusion attentions, alpha, frames and top answers.

Like Figure 3 of the MASN paper (Seo et al., ACL 2021): the appearance-centred, motion-centred
and all-mixed attention maps over the question words grounded in appearance (rows and columns
``0..L-1``) and in motion (``L..2L-1``), cut to the ``n`` real words of each half; the
question-guided weights alpha over them; the sampled frames with their detector boxes; and the
top answers with their scores.

The figure is drawn on a standalone :class:`matplotlib.figure.Figure` (no pyplot state, no
backend switch, safe in threads) and written atomically.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.image import AxesImage

from masn import atomic
from masn.extract.show import FRAME_TITLE_HEIGHT, box_colour, draw_box, show_frame

MAX_FRAMES = 8
MAX_BOXES = 5
LABEL_CHARS = 14
# Panel sizes in inches.
MAP_WIDTH, ALPHA_WIDTH, ANSWERS_WIDTH, MIN_WIDTH = 5.0, 2.2, 4.5, 12.0
NOTE_HEIGHT, ANALYSIS_HEIGHT, MAX_FRAME_HEIGHT = 0.45, 5.5, 4.0
TITLES = {
    "appearance": "appearance-centred",
    "motion": "motion-centred",
    "all": "all-mixed",
}
SHORT = {"appearance": "app.", "motion": "mot.", "all": "all"}
# Okabe-Ito colours (told apart with every common colour-vision deficiency): the streams' words
# and weights; the model's top answer in dark grey, the others light: a score's colour says
# which answer the model chose, never whether it is right (the figure does not know).
APPEARANCE_COLOUR, MOTION_COLOUR, MIXED_COLOUR = "#0072B2", "#D55E00", "#CC79A7"
STREAM_COLOURS = {"appearance": APPEARANCE_COLOUR, "motion": MOTION_COLOUR, "all": MIXED_COLOUR}
CHOSEN_COLOUR, OTHER_COLOUR = "#404040", "#BBBBBB"
NO_FUSION = "no fusion module (single stream or fusion=none)"


@dataclass
class AnswerView:
    """Everything one answer figure shows, for a single sample (no batch axis).

    attention maps are (2L, 2L) with L the token width; only the first ``len(words)`` rows and
    columns of each half are real words. alpha follows ``attention_names``. boxes are pixel
    ``x1, y1, x2, y2`` per sampled frame; frame_times are in seconds.
    """

    question: str
    words: list[str]
    top: list[tuple[str, float]]
    attention: dict[str, np.ndarray]
    alpha: np.ndarray | None
    attention_names: tuple[str, ...]
    frames: np.ndarray | None = None
    boxes: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    labels: list[list[str]] | None = None
    note: str = ""


def word_block(attention: np.ndarray, n: int, width: int) -> np.ndarray:
    """The (2n, 2n) block of a (2L, 2L) map between the real words of both halves.

    Keeps rows and columns ``0..n-1`` (appearance words) and ``L..L+n-1`` (motion words).
    """
    attention = np.asarray(attention)
    if attention.shape != (2 * width, 2 * width):
        raise ValueError(
            f"an attention map must be (2L, 2L) = {(2 * width, 2 * width)}, got {attention.shape}"
        )
    if not 1 <= n <= width:
        raise ValueError(f"the question length must lie in [1, {width}], got {n}")
    keep = np.r_[0:n, width : width + n]
    return attention[np.ix_(keep, keep)]


def pick_frames(count: int, limit: int = MAX_FRAMES) -> np.ndarray:
    """Indices of at most ``limit`` frames spread evenly over ``count``, first and last kept."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def shown_maps(view: AnswerView) -> list[tuple[str, np.ndarray, float | None]]:
    """(name, (2n, 2n) block, alpha or None) for each map of the view, in alpha order."""
    names = [name for name in view.attention_names if name in view.attention]
    names += [name for name in view.attention if name not in names]
    alpha = None if view.alpha is None else np.asarray(view.alpha, dtype=float).reshape(-1)
    if alpha is not None and len(alpha) != len(view.attention_names):
        raise ValueError(
            f"alpha has {len(alpha)} weights for attention_names {view.attention_names}"
        )
    order = {name: i for i, name in enumerate(view.attention_names)}
    maps = []
    for name in names:
        full = np.asarray(view.attention[name], dtype=float)
        block = word_block(full, len(view.words), full.shape[0] // 2)
        weight = None if alpha is None or name not in order else float(alpha[order[name]])
        maps.append((name, block, weight))
    return maps


def draw_answer(view: AnswerView, out: str | Path) -> Path:
    """Draws ``view`` into the PNG ``out`` (parents created, replaced atomically); returns it."""
    with atomic.replacing(out) as temporary:
        answer_figure(view).savefig(temporary, format="png", dpi=100)
    return Path(out)


def answer_figure(view: AnswerView) -> Figure:
    """The figure of ``view``: the question, the note, the frames with their boxes, then the
    attention maps, the alpha bars and the top answers (in this order in ``figure.axes``)."""
    maps = shown_maps(view)
    columns = _analysis_columns(maps)
    width = max(MIN_WIDTH, sum(columns.values()))
    frames = None if view.frames is None or len(view.frames) == 0 else np.asarray(view.frames)
    heights = ([NOTE_HEIGHT] if view.note else []) + [ANALYSIS_HEIGHT]
    if frames is not None:
        band = _frame_width(frames, width) * _aspect(frames) + FRAME_TITLE_HEIGHT
        heights.insert(len(heights) - 1, band)
    figure = Figure(figsize=(width, sum(heights) + 0.6), layout="constrained")
    figure.suptitle(textwrap.fill(view.question, 140), fontsize=14, fontweight="bold")
    rows = list(figure.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0])
    if view.note:
        _draw_note(rows.pop(0), view.note)
    if frames is not None:
        _draw_frames(rows.pop(0), view, frames, width)
    _draw_analysis(rows.pop(0), view, maps, columns)
    return figure


def _analysis_columns(maps: list[tuple[str, np.ndarray, float | None]]) -> dict[str, float]:
    """Width in inches of each panel of the analysis row, keyed ``map0``.., ``alpha``, ``top``."""
    columns = {f"map{i}": MAP_WIDTH for i in range(max(len(maps), 1))}
    if any(weight is not None for _, _, weight in maps):
        columns["alpha"] = ALPHA_WIDTH
    columns["top"] = ANSWERS_WIDTH
    return columns


def _frame_width(frames: np.ndarray, width: float) -> float:
    """Width in inches of each shown frame in a figure ``width`` inches wide: the frames share
    the width, unless that would make them taller than ``MAX_FRAME_HEIGHT``."""
    shown = len(pick_frames(len(frames)))
    return min(width / shown, MAX_FRAME_HEIGHT / _aspect(frames))


def _aspect(frames: np.ndarray) -> float:
    """Height over width of (N, H, W, 3) frames."""
    return frames.shape[1] / max(frames.shape[2], 1)


def _draw_note(panel: SubFigure, note: str) -> None:
    """A prominent red warning line under the question."""
    panel.text(
        0.5,
        0.5,
        note,
        ha="center",
        va="center",
        color="red",
        fontsize=13,
        fontweight="bold",
    )


def _draw_frames(panel: SubFigure, view: AnswerView, frames: np.ndarray, width: float) -> None:
    """Up to MAX_FRAMES evenly picked frames with their first boxes, labels and times, side by
    side and centred (frames that cannot fill the width leave it at both sides, not between)."""
    picked = pick_frames(len(frames))
    side = (width / _frame_width(frames, width) - len(picked)) / 2  # in frame widths
    ratios = [side, *[1.0] * len(picked), side] if side > 0.05 else [1.0] * len(picked)
    grid = panel.add_gridspec(1, len(ratios), width_ratios=ratios)
    first = 1 if side > 0.05 else 0
    axes = [panel.add_subplot(grid[0, first + i]) for i in range(len(picked))]
    for axis, index in zip(axes, picked, strict=True):
        show_frame(axis, frames[index])
        axis.set_xticks([])
        axis.set_yticks([])
        when = "" if view.frame_times is None else f"t = {float(view.frame_times[index]):.2f} s"
        axis.set_title(f"frame {index}" + (f", {when}" if when else ""), fontsize=9)
        if view.boxes is None:
            continue
        labels = view.labels[index] if view.labels is not None else []
        for k, box in enumerate(np.asarray(view.boxes[index], dtype=float)[:MAX_BOXES]):
            label = labels[k] if k < len(labels) else ""
            short = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
            draw_box(axis, box, short, box_colour(k))


def _draw_analysis(
    panel: SubFigure,
    view: AnswerView,
    maps: list[tuple[str, np.ndarray, float | None]],
    columns: dict[str, float],
) -> None:
    """The attention maps with a shared colour bar, the alpha bars and the top answers."""
    grid = panel.add_gridspec(1, len(columns), width_ratios=list(columns.values()))
    cells = {name: grid[0, i] for i, name in enumerate(columns)}
    if maps:
        vmax = max(float(block.max()) for _, block, _ in maps) or 1.0
        axes = [panel.add_subplot(cells[f"map{i}"]) for i in range(len(maps))]
        images = [
            _draw_map(axis, name, block, weight, view.words, vmax)
            for axis, (name, block, weight) in zip(axes, maps, strict=True)
        ]
        panel.colorbar(images[-1], ax=axes, shrink=0.8, label="attention weight")
    else:
        axis = panel.add_subplot(cells["map0"])
        axis.axis("off")
        axis.text(0.5, 0.5, NO_FUSION, ha="center", va="center", fontsize=12, wrap=True)
    if "alpha" in cells:
        _draw_alpha(panel.add_subplot(cells["alpha"]), maps)
    _draw_answers(panel.add_subplot(cells["top"]), view.top)


def _draw_map(
    axis: Axes, name: str, block: np.ndarray, weight: float | None, words: list[str], vmax: float
) -> AxesImage:
    """One (2n, 2n) attention map with two-colour word ticks and lines between the halves."""
    image = axis.imshow(block, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    title = TITLES.get(name, name)
    if weight is not None:
        title += f"\nα = {weight:.3f}"
    axis.set_title(title, fontsize=11)
    n = len(words)
    _word_ticks(axis, words)
    for line in (axis.axhline, axis.axvline):
        line(n - 0.5, color="white", lw=1.5)
    axis.set_xlabel("keys: appearance | motion words", fontsize=8)
    axis.set_ylabel("queries: appearance | motion words", fontsize=8)
    return image


def _word_ticks(axis: Axes, words: list[str]) -> None:
    """Word labels on both axes, appearance words in blue and motion words in orange."""
    n = len(words)
    size = float(np.clip(110 / (2 * n), 4, 9))
    step = max(1, int(np.ceil(2 * n / 48)))  # thin the labels of very long questions
    positions = np.arange(0, 2 * n, step)
    labels = [("A:" if i < n else "M:") + words[i % n] for i in positions]
    axis.set_xticks(positions, labels, rotation=90, fontsize=size)
    axis.set_yticks(positions, labels, fontsize=size)
    for ticks in (axis.get_xticklabels(), axis.get_yticklabels()):
        for position, tick in zip(positions, ticks, strict=True):
            tick.set_color(APPEARANCE_COLOUR if position < n else MOTION_COLOUR)


def _draw_alpha(axis: Axes, maps: list[tuple[str, np.ndarray, float | None]]) -> None:
    """Bars of the question-guided weights alpha over the fusion attentions."""
    axis.set_title("α (question-guided)", fontsize=11)
    weighted = [(name, weight) for name, _, weight in maps if weight is not None]
    names = [SHORT.get(name, name) for name, _ in weighted]
    values = [weight for _, weight in weighted]
    colours = [STREAM_COLOURS.get(name, OTHER_COLOUR) for name, _ in weighted]
    bars = axis.bar(names, values, color=colours)
    axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.tick_params(labelsize=8)


def _draw_answers(axis: Axes, top: list[tuple[str, float]]) -> None:
    """A horizontal bar per answer, best on top, its score at the bar."""
    axis.set_title(f"top-{len(top)} answers" if top else "answers", fontsize=11)
    if not top:
        axis.axis("off")
        axis.text(0.5, 0.5, "no answers", ha="center", va="center", fontsize=10)
        return
    texts = [textwrap.shorten(str(text), 28, placeholder="…") for text, _ in top]
    scores = [float(score) for _, score in top]
    colours = [CHOSEN_COLOUR] + [OTHER_COLOUR] * (len(top) - 1)
    bars = axis.barh(np.arange(len(top)), scores, color=colours)
    axis.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    axis.set_yticks(np.arange(len(top)), texts, fontsize=9)
    axis.invert_yaxis()
    low, high = min(0.0, *scores), max(0.0, *scores)
    span = (high - low) or 1.0
    # Room for the score labels beyond the bar ends, on the left too for negative scores.
    axis.set_xlim(low - 0.25 * span * (low < 0), high + 0.25 * span)
    axis.tick_params(axis="x", labelsize=8)
