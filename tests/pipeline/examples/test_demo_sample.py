"""The bundled demo sample: shipped questions are current and name videos prepare_videos makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masn.extract.video.decode import decode_video, probe
from masn.extract.video.sources import list_videos
from masn.pipeline.examples import demo_sample as sample
from masn.pipeline.qa.annotations import read_jsonl
from masn.pipeline.qa.tasks import infer_head

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
    train_answers = {row.answer for row in rows["train"]}
    if kind == "open_ended":
        assert {row.answer for row in rows["test"]} <= train_answers
        demo = [r for r in rows["train"] if r.keys == (sample.DEMO_VIDEO,)]
        assert (sample.DEMO_QUESTION, "rabbit") in {(r.question, r.answer) for r in demo}
    if kind == "count":
        assert {row.answer for row in rows["test"]} <= train_answers
        assert all(row.answer >= 1 for split_rows in rows.values() for row in split_rows)
    if kind == "multiple_choice":
        assert {len(row.candidates) for split_rows in rows.values() for row in split_rows} == {5}


def test_split_is_by_clip_about_three_to_one() -> None:
    test = [spec for spec in sample.CLIPS if spec.name in sample.TEST_CLIPS]
    assert len(test) == len(sample.TEST_CLIPS)
    assert 0.2 <= len(test) / len(sample.CLIPS) <= 0.3
    assert len({spec.name for spec in sample.CLIPS}) == len(sample.CLIPS)


def test_question_videos_exist(videos: Path) -> None:
    keys = {source.key for source in list_videos(videos, "folder")}
    expected = {f"real/{name}" for name in sample.REAL_VIDEOS} | {c.key for c in sample.CLIPS}
    assert keys == expected
    for path in SHIPPED.rglob("*.jsonl"):
        assert {row.keys[0] for row in read_jsonl(path)} <= keys, path
    for name in sample.REAL_VIDEOS:
        copy = videos / "real" / name
        assert not copy.is_symlink()
        assert copy.read_bytes() == (sample.SAMPLE_DIR / "videos" / name).read_bytes()


def test_prepare_videos_is_idempotent(videos: Path) -> None:
    before = {path: path.stat().st_mtime_ns for path in videos.rglob("*") if path.is_file()}
    assert sample.prepare_videos(videos) == videos
    after = {path: path.stat().st_mtime_ns for path in videos.rglob("*") if path.is_file()}
    assert after == before


def test_prepare_videos_replaces_a_broken_clip(videos: Path) -> None:
    path = videos / sample.CLIPS[0].key
    path.write_bytes(b"not a video")
    sample.prepare_videos(videos)
    assert probe(path).width == 160


def _centroids(frames: np.ndarray) -> np.ndarray:
    """(N, 2) x, y of the saturated (shape) pixels of each frame."""
    channels = frames.astype(np.int16)
    mask = channels.max(axis=3) - channels.min(axis=3) > 100
    assert mask.sum(axis=(1, 2)).min() > 200  # the shape is visible in every frame
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    area = mask.sum(axis=(1, 2))
    return np.stack([(mask * xs).sum(axis=(1, 2)) / area, (mask * ys).sum(axis=(1, 2)) / area], 1)


@pytest.mark.parametrize("spec", sample.CLIPS, ids=lambda spec: spec.name)
def test_rendered_clips_decode(videos: Path, spec: sample.ClipSpec) -> None:
    decoded = decode_video(videos / spec.key)
    assert (decoded.width, decoded.height) == (160, 120)
    assert decoded.frames.shape[1:] == (120, 160, 3)
    assert decoded.duration == pytest.approx(spec.seconds, abs=0.2)
    centre = _centroids(decoded.frames)
    spread = centre.max(axis=0) - centre.min(axis=0)
    if spec.motion == "bounce":
        assert spread[1] > 50 and spread[0] < 1
        # the 6-fps stream shows the shape on the floor once per bounce
        assert (centre[:, 1] > centre[:, 1].max() - 2).sum() == spec.bounces
    elif spec.motion in ("left", "right"):
        assert spread[0] > 60 and spread[1] < 1
        step = np.diff(centre[:, 0])
        assert (step < 0).all() if spec.motion == "left" else (step > 0).all()
    else:
        assert spread.max() < 1.5
    if spec.motion == "turn":
        first = decoded.frames[0].astype(np.int16)
        assert max(np.abs(f.astype(np.int16) - first).max() for f in decoded.frames[1:4]) > 100
    if spec.motion == "still":
        assert np.abs(decoded.frames.astype(np.int16) - decoded.frames[0]).max() < 40


def test_bounce_touches_the_floor_bounces_times() -> None:
    spec = next(c for c in sample.CLIPS if c.motion == "bounce" and c.bounces == 3)
    frames = sample.render_frames(spec, fps=24)
    lows = -_centroids(frames)[:, 1]
    minima = (lows[1:-1] < lows[:-2]) & (lows[1:-1] <= lows[2:])
    assert minima.sum() == spec.bounces


def test_render_clip_checks_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        sample.render_clip(sample.CLIPS[0], tmp_path / "x.mp4", size=(161, 120))
    with pytest.raises(ValueError, match="kind"):
        sample.questions_dir("frameqa")
