"""The bundled demo sample: shipped questions are current and name videos prepare_videos makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masn.datasets.annotations import infer_head
from masn.datasets.folder import read_jsonl
from masn.extract.video.decode import decode_video, probe
from masn.extract.video.sources import list_videos
from masn.pipeline.examples import demo_sample as sample

SHIPPED = sample.SAMPLE_DIR / "questions"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample.prepare_videos(tmp_path_factory.mktemp("sample") / "videos")


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*.jsonl")}


def test_shipped_questions_are_current(tmp_path: Path) -> None:
    sample.write_questions(tmp_path)
    assert _files(SHIPPED) == _files(tmp_path)
    assert sorted(_files(SHIPPED)) == sorted(
        f"{k}/{s}.jsonl" for k in sample.KINDS for s in sample.SPLITS
    )


@pytest.mark.parametrize("kind", sample.KINDS)
def test_questions_parse_as_their_kind(kind: str) -> None:
    assert sample.questions_dir(kind) == SHIPPED / kind
    rows = {
        split: read_jsonl(sample.questions_dir(kind) / f"{split}.jsonl") for split in sample.SPLITS
    }
    assert {infer_head(split_rows) for split_rows in rows.values()} == {kind}
    train_videos = {row.keys[0] for row in rows["train"]}
    test_videos = {row.keys[0] for row in rows["test"]}
    assert not train_videos & test_videos
    assert sample.REAL_KEY not in train_videos | test_videos
    train_answers = {row.answer for row in rows["train"]}
    if kind == "open_ended":
        assert {row.answer for row in rows["test"]} <= train_answers
    if kind == "count":
        assert {row.answer for row in rows["test"]} <= train_answers
        assert all(row.answer >= 1 for split_rows in rows.values() for row in split_rows)
    if kind == "multiple_choice":
        assert {len(row.candidates) for split_rows in rows.values() for row in split_rows} == {5}


# What the held-out questions must cover (issue 12): enough of each kind, every type asked.
TEST_QUESTIONS = {
    "open_ended": (30, {"colour", "shape", "motion", "direction"}),
    "count": (20, {"shapes", "bounces"}),
    "multiple_choice": (20, {"colour", "motion"}),
}


@pytest.mark.parametrize("kind", sample.KINDS)
def test_held_out_questions_are_enough_and_cover_every_type(kind: str) -> None:
    test = read_jsonl(sample.questions_dir(kind) / "test.jsonl")
    least, types = TEST_QUESTIONS[kind]
    assert len(test) >= least
    assert {row.qtype for row in test} == types
    if kind != "count":
        answers = {(row.qtype, row.answer) for row in test}
        assert len(answers) > len(types)  # not one answer per type


def test_motion_answers_cover_turning_and_both_directions() -> None:
    test = read_jsonl(sample.questions_dir("open_ended") / "test.jsonl")
    assert {row.answer for row in test if row.qtype == "motion"} == {
        "move",
        "bounce",
        "turn",
        "stay",
    }
    assert {row.answer for row in test if row.qtype == "direction"} == {"left", "right"}
    bounces = read_jsonl(sample.questions_dir("count") / "test.jsonl")
    assert len({row.answer for row in bounces if row.qtype == "bounces"}) >= 3


def test_split_is_by_clip_one_in_three_held_out() -> None:
    test = [spec for spec in sample.CLIPS if spec.name in sample.TEST_CLIPS]
    assert len(test) == len(sample.TEST_CLIPS)
    assert 0.3 <= len(test) / len(sample.CLIPS) <= 0.35
    assert len({spec.name for spec in sample.CLIPS}) == len(sample.CLIPS)


def test_copies_and_bounces_are_not_functions_of_other_attributes() -> None:
    """Neither the number of shapes nor of bounces can be read off colour, shape or motion."""
    for attribute in ("colour", "shape", "motion"):
        seen: dict[str, set[int]] = {}
        for spec in sample.CLIPS:
            seen.setdefault(getattr(spec, attribute), set()).add(spec.copies)
        assert all(values == {1, 2, 3, 4} for values in seen.values()), attribute
    bouncing = [spec for spec in sample.CLIPS if spec.motion == "bounce"]
    by_copies: dict[int, set[int]] = {}
    for spec in bouncing:
        by_copies.setdefault(spec.copies, set()).add(spec.bounces)
    assert all(len(values) >= 3 for values in by_copies.values())


def test_question_videos_exist(videos: Path) -> None:
    keys = {source.key for source in list_videos(videos, "folder")}
    assert keys == {sample.REAL_KEY} | {c.key for c in sample.CLIPS}
    for path in SHIPPED.rglob("*.jsonl"):
        assert {row.keys[0] for row in read_jsonl(path)} <= keys, path
    copy = videos / sample.REAL_KEY
    assert not copy.is_symlink()
    assert copy.read_bytes() == (sample.SAMPLE_DIR / "videos" / sample.REAL_VIDEO).read_bytes()


def test_prepare_videos_is_idempotent(videos: Path) -> None:
    before = {path: path.stat().st_mtime_ns for path in videos.rglob("*") if path.is_file()}
    assert sample.prepare_videos(videos) == videos
    after = {path: path.stat().st_mtime_ns for path in videos.rglob("*") if path.is_file()}
    assert after == before


def test_prepare_videos_replaces_a_broken_clip(videos: Path) -> None:
    path = videos / sample.CLIPS[0].key
    path.write_bytes(b"not a video")
    sample.prepare_videos(videos)
    assert probe(path).width == sample.SIZE[0]


def _centroids(frames: np.ndarray) -> np.ndarray:
    """(N, 2) x, y of the saturated (shape) pixels of each frame."""
    channels = frames.astype(np.int16)
    mask = channels.max(axis=3) - channels.min(axis=3) > 100
    assert mask.sum(axis=(1, 2)).min() > 200  # the shapes are visible in every frame
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    area = mask.sum(axis=(1, 2))
    return np.stack([(mask * xs).sum(axis=(1, 2)) / area, (mask * ys).sum(axis=(1, 2)) / area], 1)


def _blobs(frame: np.ndarray) -> int:
    """Separate saturated regions in one frame (the number of shapes)."""
    channels = frame.astype(np.int16)
    mask = channels.max(axis=2) - channels.min(axis=2) > 100
    columns = mask.any(axis=0).astype(np.int8)
    return int((np.diff(columns, prepend=0) == 1).sum())


# The first round: every combination of colour, shape and motion once.
FIRST_ROUND = sample.CLIPS[: len({(c.colour, c.shape, c.motion) for c in sample.CLIPS})]


@pytest.mark.parametrize("spec", FIRST_ROUND, ids=lambda spec: spec.name)
def test_rendered_clips_decode(videos: Path, spec: sample.ClipSpec) -> None:
    decoded = decode_video(videos / spec.key)
    width, height = sample.SIZE
    assert (decoded.width, decoded.height) == (width, height)
    assert decoded.frames.shape[1:] == (height, width, 3)
    assert decoded.duration == pytest.approx(spec.seconds, abs=0.2)
    assert _blobs(decoded.frames[0]) == spec.copies
    centre = _centroids(decoded.frames)
    spread = centre.max(axis=0) - centre.min(axis=0)
    if spec.motion == "bounce":
        assert spread[1] > 50 and spread[0] < 1
        # the sampled frames (every 4th at 6 fps) show the shapes on the floor once per bounce
        sampled = centre[::4, 1]
        assert (sampled > centre[:, 1].max() - 2).sum() == spec.bounces
    elif spec.motion in ("left", "right"):
        assert spread[0] > 40 and spread[1] < 1
        step = np.diff(centre[:, 0])
        assert (step < 0).all() if spec.motion == "left" else (step > 0).all()
    elif spec.motion == "turn":  # shapes turn in place: their mean moves less than a pixel or two
        assert spread.max() < 4
    else:
        assert spread.max() < 1.5
    if spec.motion == "turn":
        first = decoded.frames[0].astype(np.int16)
        assert max(np.abs(f.astype(np.int16) - first).max() for f in decoded.frames[1:4]) > 100
    if spec.motion == "still":
        assert np.abs(decoded.frames.astype(np.int16) - decoded.frames[0]).max() < 64  # codec noise


def test_contacts_fall_on_sampled_frames_and_the_shapes_fly_between() -> None:
    width, height = sample.SIZE
    sampled = np.arange(5) * 4 / 6  # every 4th frame at 6 fps
    for spec in (c for c in sample.CLIPS if c.motion == "bounce"):
        contacts = sample.contact_times(spec)
        assert len(contacts) == spec.bounces
        assert all(np.isclose(sampled, t).any() for t in contacts)
        heights = np.array([sample.row_position(spec, t, width, height)[1] for t in sampled])
        floor = max(heights)
        on_floor = np.isclose(heights, floor)
        assert on_floor.sum() == spec.bounces
        assert (heights[~on_floor] < floor - 20).all()  # clearly in the air otherwise
        # resting on the floor a moment either side of each contact
        for contact in contacts:
            for t in (contact - 1 / 12, contact + 1 / 12):
                assert sample.row_position(spec, t, width, height)[1] == pytest.approx(floor)


def test_render_clip_checks_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        sample.render_clip(sample.CLIPS[0], tmp_path / "x.mp4", size=(161, 120))
    with pytest.raises(ValueError, match="kind"):
        sample.questions_dir("frameqa")
