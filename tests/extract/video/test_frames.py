"""Frame choice by presentation time (6 fps, no duplicates) and the clip around a frame."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from masn.extract.video.frames import (
    TIME_TOLERANCE,
    FrameSelector,
    clip_positions,
    end_time,
    select_frames,
)


def brute_force(pts: list[float], fps: float, duration: float | None = None) -> list[int]:
    """The definition, target by target, to check the vectorised and streaming versions."""
    if not pts:
        return []
    order = sorted(range(len(pts)), key=lambda i: pts[i])
    unique = [i for n, i in enumerate(order) if n == 0 or pts[i] != pts[order[n - 1]]]
    times = [pts[i] for i in unique]
    if duration is None:
        gaps = [b - a for a, b in itertools.pairwise(times)]
        duration = times[-1] + (float(np.median(gaps)) if gaps else 1 / fps)
    chosen: list[int] = []
    k = 0
    while k / fps < duration - TIME_TOLERANCE:
        shown = [n for n, t in enumerate(times) if t <= k / fps + TIME_TOLERANCE]
        index = unique[shown[-1] if shown else 0]
        if not chosen or chosen[-1] != index:
            chosen.append(index)
        k += 1
    return chosen


def stream(pts: list[float], fps: float = 6.0, duration: float | None = None) -> list[int]:
    selector: FrameSelector[int] = FrameSelector(fps, duration)
    kept: list[int] = []
    for index, time in enumerate(pts):
        kept += selector.push(time, index)
    return kept + selector.finish()


def random_vfr(rng: random.Random) -> list[float]:
    """Sorted irregular pts: mixed gaps (some faster, some slower than 6 fps), some repeated."""
    time = rng.choice([0.0, 0.0, 0.3, 1 / 6, -0.05])
    pts = []
    for _ in range(rng.randint(1, 80)):
        pts.append(time)
        gap = rng.choice([0.0, 1 / 30, 1 / 25, 1 / 10, 1 / 6, 0.25, 0.5, rng.uniform(0.001, 0.4)])
        time += gap
    return pts


def test_30fps_keeps_every_fifth_frame():
    pts = [i / 30 for i in range(60)]
    assert select_frames(pts) == list(range(0, 60, 5))


def test_25fps_takes_the_frame_shown_at_each_target():
    pts = [i / 25 for i in range(125)]  # 5 s -> 30 targets
    chosen = select_frames(pts)
    assert len(chosen) == 30 == math.ceil(5.0 * 6)
    assert chosen == [math.floor(25 * k / 6 + 1e-9) for k in range(30)]
    assert chosen[6] == 25  # t = 1 s falls exactly on a frame: that frame, not the one before


def test_frame_a_fraction_of_a_millisecond_late_counts_as_on_the_grid():
    # Matroska stores 1/6 s as 167 ms: still the frame shown at t = 1/6.
    assert select_frames([0.0, 0.1, 0.167, 0.3]) == [0, 2, 3]
    # Two milliseconds late is a different frame.
    assert select_frames([0.0, 0.1, 1 / 6 + 0.002, 0.3]) == [0, 1, 3]


def test_slow_source_keeps_each_frame_once():
    pts = [i / 4 for i in range(10)]  # 4 fps: several targets share a frame
    chosen = select_frames(pts)
    assert chosen == list(range(10))


def test_slow_source_with_long_holds():
    # A GIF-like timeline: a frame held for 1 s covers 6 targets but is kept once.
    pts = [0.0, 1.0, 1.05, 1.1, 2.5]
    assert select_frames(pts) == [0, 1, 3, 4]


def test_unsorted_and_duplicate_pts_index_the_original_sequence():
    pts = [0.4, 0.0, 0.2, 0.2, 0.6, 0.1]
    # sorted unique: 0.0 (1), 0.1 (5), 0.2 (2; 3 is a duplicate), 0.4 (0), 0.6 (4)
    assert select_frames(pts) == [1, 5, 2, 0, 4]


def test_targets_before_the_first_frame_take_the_first_frame():
    pts = [0.5 + i / 30 for i in range(30)]
    chosen = select_frames(pts)
    assert chosen[0] == 0
    assert len(chosen) == len(set(chosen))
    # Targets 0 .. 0.5 all show frame 0; t = 2/3 s shows frame 5 (0.5 + 5/30).
    assert chosen[:2] == [0, 5]


def test_single_frame_gives_one_frame_wherever_it_is():
    assert select_frames([0.0]) == [0]
    assert select_frames([3.2]) == [0]
    assert end_time([3.2]) == pytest.approx(3.2 + 1 / 6)


def test_no_frames():
    assert select_frames([]) == []
    assert stream([]) == []


def test_default_duration_is_last_pts_plus_median_interval():
    pts = [0.0, 0.1, 0.2, 0.5, 0.6]
    assert end_time(pts) == pytest.approx(0.7)


def test_last_frame_without_a_target_in_its_interval_is_dropped():
    # Last frame at 0.45 with a 0.01 s median interval: no target in [0.45, 0.46).
    pts = [0.0, 0.01, 0.02, 0.45]
    assert select_frames(pts) == [0, 2]


def test_explicit_duration_cuts_the_stream():
    pts = [i / 30 for i in range(60)]
    assert select_frames(pts, duration=1.0) == list(range(0, 30, 5))
    assert select_frames(pts, duration=0.0) == []


def test_other_rates():
    pts = [i / 30 for i in range(30)]
    assert select_frames(pts, fps=15) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28]
    assert select_frames(pts, fps=30) == list(range(30))


def test_vfr_alternating_gaps():
    gaps = [1 / 30, 1 / 10] * 20
    pts = np.concatenate([[0.0], np.cumsum(gaps)]).tolist()
    chosen = select_frames(pts)
    assert chosen == brute_force(pts, 6.0)
    assert len(chosen) == math.ceil(end_time(pts) * 6)  # every gap is shorter than 1/6 s
    assert chosen == sorted(set(chosen))


def test_vectorised_streaming_and_definition_agree_on_random_vfr():
    rng = random.Random(20210801)
    for case in range(500):
        pts = random_vfr(rng)
        fps = rng.choice([6.0, 6.0, 2.5, 30.0])
        duration = rng.choice([None, None, rng.uniform(0, 10)])
        expected = brute_force(pts, fps, duration)
        context = f"case {case}: fps={fps} duration={duration} pts={pts}"
        assert select_frames(pts, fps, duration) == expected, context
        assert stream(pts, fps, duration) == expected, context
        shuffled = list(range(len(pts)))
        rng.shuffle(shuffled)
        chosen = select_frames([pts[i] for i in shuffled], fps, duration)
        assert [pts[shuffled[i]] for i in chosen] == [pts[i] for i in expected], context


def test_selector_decides_each_frame_when_the_next_arrives():
    selector: FrameSelector[str] = FrameSelector()
    assert selector.push(0.0, "a") == []
    assert selector.push(0.1, "b") == ["a"]  # a is shown at t=0
    assert selector.push(0.15, "c") == []  # b is never shown (c starts before t=1/6)
    assert selector.last_pts == 0.15
    assert selector.push(0.15, "duplicate") == []
    assert selector.push(0.45, "d") == ["c"]
    assert selector.finish() == ["d"]  # shown at t = 0.5 (the median gap 0.1 ends it at 0.55)
    assert selector.end == pytest.approx(0.55)


def test_selector_misuse():
    selector: FrameSelector[int] = FrameSelector()
    selector.push(1.0, 0)
    with pytest.raises(ValueError, match="must not decrease"):
        selector.push(0.5, 1)
    with pytest.raises(RuntimeError, match="after finish"):
        _ = selector.end
    selector.finish()
    with pytest.raises(RuntimeError):
        selector.push(2.0, 2)
    with pytest.raises(ValueError, match="fps"):
        FrameSelector(0)
    with pytest.raises(ValueError, match="finite"):
        select_frames([0.0, float("nan")])


def test_clip_positions_centre_is_the_fifth_of_eight():
    clip = clip_positions(100, 50)
    assert clip.tolist() == [46, 47, 48, 49, 50, 51, 52, 53]
    assert clip[4] == 50


def test_clip_positions_replicate_the_edges():
    assert clip_positions(100, 0).tolist() == [0, 0, 0, 0, 0, 1, 2, 3]
    assert clip_positions(100, 99).tolist() == [95, 96, 97, 98, 99, 99, 99, 99]
    assert clip_positions(1, 0).tolist() == [0] * 8
    assert clip_positions(3, 1).tolist() == [0, 0, 0, 0, 1, 2, 2, 2]
    assert clip_positions(10, 5, length=4).tolist() == [3, 4, 5, 6]


def test_clip_positions_reject_a_centre_outside_the_stream():
    with pytest.raises(ValueError, match="outside"):
        clip_positions(5, 5)
    with pytest.raises(ValueError):
        clip_positions(0, 0)


def test_stream_within_the_first_millisecond_keeps_its_first_frame():
    # A header declaring ~2e9 fps: every frame lies before the first target's tolerance.
    pts = [i / 2_147_483_647 for i in range(10)]
    assert end_time(pts) < TIME_TOLERANCE
    assert select_frames(pts) == [0]
    assert stream(pts) == [0]
    assert select_frames(list(reversed(pts))) == [9]  # the first in time
    # An explicit duration is obeyed as given.
    assert select_frames(pts, duration=0.0) == [] and stream(pts, duration=0.0) == []
