"""Synthetic collections with planted answers: a feature store plus JSONL questions.

Each video belongs to a class whose pattern (a fixed random direction, or a length along one
direction for counts) is added to its features under noise; the question's answer is that
class. A model that reads the video answers well above chance, one that does not stays at
chance. Used to test that training works end to end, and by the end-to-end training benchmark.
``write_collection`` writes every synthetic collection (these and `masn synergy`'s): one store
layout, one split rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masn.extract.store.schema import VideoRecord
from masn.extract.store.writer import StoreWriter

WORDS = ("apple", "boat", "cat", "drum", "eagle", "fork", "guitar", "horse", "kite", "lamp")
QUESTION = {
    "open_ended": "what is shown in the video?",
    "count": "how many times does it happen?",
    "multiple_choice": "which object is shown?",
}
CANDIDATES = 5
MAX_COUNT = 6
SPLITS = ("train", "val", "test")
SHARES = (0.7, 0.15)  # of the videos: train, val; the rest is test


@dataclass(frozen=True)
class SyntheticShape:
    """Sizes of a synthetic collection (small by default: trains in seconds on a CPU)."""

    videos: int = 160
    questions_per_video: int = 2
    frames: int = 6
    objects: int = 3
    dim: int = 32
    classes: int = 6
    noise: float = 1.0
    strength: float = 1.5


def write_synthetic(
    folder: str | Path, head: str, shape: SyntheticShape = SyntheticShape(), seed: int = 0
) -> tuple[Path, Path]:
    """Writes ``folder/annotations/{train,val,test}.jsonl`` (70/15/15 % of the videos) and
    ``folder/features.h5``; returns (annotations folder, store path)."""
    if head not in QUESTION:
        raise ValueError(f"head must be one of {sorted(QUESTION)}, got {head!r}")
    classes = MAX_COUNT if head == "count" else shape.classes
    if classes > len(WORDS):
        raise ValueError(f"at most {len(WORDS)} classes")
    if head == "multiple_choice" and classes < CANDIDATES:
        raise ValueError(f"multiple choice needs at least {CANDIDATES} classes")
    rng = np.random.default_rng(seed)
    patterns = _patterns(rng, classes, shape.dim, head == "count")
    labels = rng.integers(0, classes, shape.videos)
    signals = (shape.strength * np.sqrt(shape.dim) * patterns[label] for label in labels)

    def questions(key: str, index: int) -> list[dict[str, Any]]:
        label = int(labels[index])
        return [_question(key, label, head, classes, rng) for _ in range(shape.questions_per_video)]

    return write_collection(
        folder,
        ((signal, signal) for signal in signals),
        questions,
        frames=shape.frames,
        objects=shape.objects,
        noise=shape.noise,
        shares=SHARES,
        provenance={"synthetic": head, "seed": seed},
        rng=rng,
    )


def split_sizes(videos: int, shares: tuple[float, float]) -> tuple[int, int, int]:
    """Train, val and test videos: train and val take their ``shares`` of ``videos``
    (rounded), test the rest."""
    train, val = (round(share * videos) for share in shares)
    if train + val > videos:
        raise ValueError(f"shares {shares} of {videos} videos add up to more than all of them")
    return train, val, videos - train - val


def write_collection(
    folder: str | Path,
    signals: Iterable[tuple[np.ndarray, np.ndarray]],
    questions: Callable[[str, int], list[dict[str, Any]]],
    *,
    frames: int,
    objects: int,
    noise: float,
    shares: tuple[float, float],
    provenance: Mapping[str, Any],
    rng: np.random.Generator,
) -> tuple[Path, Path]:
    """Writes a synthetic collection; returns (annotations folder, store path).

    ``folder/features.h5`` (``provenance`` as its config) holds one ``planted_video`` per
    (appearance, motion) signal pair, keyed v00000, v00001, ... in order. Then
    ``folder/annotations/{train,val,test}.jsonl`` hold the rows ``questions(key, index)`` of
    each video, the videos split in order by ``split_sizes(videos, shares)``. ``rng`` draws the
    noise and boxes of all videos before any question, so questions drawn from it are the same
    for the same seed.
    """
    folder = Path(folder)
    store = folder / "features.h5"
    keys: list[str] = []
    with StoreWriter(store, provenance, {"synthetic": "none"}) as writer:
        for index, (appearance, motion) in enumerate(signals):
            keys.append(f"v{index:05d}")
            writer.write(planted_video(keys[-1], appearance, motion, frames, objects, noise, rng))
        writer.consolidate()
    annotations = folder / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    cuts = np.cumsum(split_sizes(len(keys), shares)[:2])
    for split, indices in zip(SPLITS, np.split(np.arange(len(keys)), cuts), strict=True):
        rows = [row for index in indices for row in questions(keys[index], int(index))]
        (annotations / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return annotations, store


def _patterns(rng: np.random.Generator, classes: int, dim: int, count: bool) -> np.ndarray:
    """(classes, dim): unit directions per class, or multiples of one direction for counts."""
    if count:
        direction = rng.standard_normal(dim)
        direction /= np.linalg.norm(direction)
        return np.stack([(c + 1) / 2 * direction for c in range(classes)])
    return unit_directions(rng, classes, dim)


def unit_directions(rng: np.random.Generator, classes: int, dim: int) -> np.ndarray:
    """(classes, dim) random unit vectors, one pattern per class."""
    directions = rng.standard_normal((classes, dim))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def planted_video(
    key: str,
    appearance: np.ndarray,
    motion: np.ndarray,
    frames: int,
    objects: int,
    noise: float,
    rng: np.random.Generator,
) -> VideoRecord:
    """A record whose appearance (global and region) features are ``noise`` times N(0, 1) plus
    the (dim,) signal ``appearance``, and likewise for motion; its random boxes carry no label."""
    corners = np.sort(rng.uniform(0, 1, (frames, objects, 2, 2)), axis=2)  # x1 < x2, y1 < y2
    boxes = np.stack(
        [corners[..., 0, 0], corners[..., 0, 1], corners[..., 1, 0], corners[..., 1, 1]], -1
    )

    def features(signal: np.ndarray, *size: int) -> np.ndarray:
        drawn = noise * rng.standard_normal((*size, signal.shape[-1])) + signal
        return drawn.astype(np.float32)

    return VideoRecord(
        key=key,
        appearance=features(appearance, frames),
        appearance_objects=features(appearance, frames, objects),
        motion=features(motion, frames),
        motion_objects=features(motion, frames, objects),
        box_geometry=VideoRecord.geometry_from_boxes(boxes * 100, 100, 100),
    )


def _question(key: str, label: int, head: str, classes: int, rng: np.random.Generator) -> dict:
    row: dict = {"video": key, "question": QUESTION[head]}
    if head == "count":
        row["answer"] = label + 1
    elif head == "open_ended":
        row["answer"] = WORDS[label]
    else:  # the right word and four other class words, shuffled
        others = rng.choice([c for c in range(classes) if c != label], CANDIDATES - 1, False)
        chosen = [label, *others.tolist()]
        order = rng.permutation(CANDIDATES)
        row["candidates"] = [WORDS[chosen[i]] for i in order]
        row["answer"] = int(np.flatnonzero(order == 0)[0])
    return row
