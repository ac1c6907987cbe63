"""Decoding to the 6-fps stream: containers, frame rates, timing, failures, both backends.

The clips are written with PyAV at test time (tests/media.py).
"""

from __future__ import annotations

import errno
import math
import os
import re
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from masn.errors import InvalidInput, MissingInput
from masn.extract.video.decode import (
    DecodedVideo,
    DecodeError,
    check_decoder,
    check_video_file,
    decode_video,
    iter_frames,
    probe,
)
from masn.extract.video.frames import TIME_TOLERANCE, select_frames
from tests.builders import (
    HEIGHT,
    WIDTH,
    Clip,
    picture,
    source_index,
    vfr_stamps,
    write_absurd_rate_avi,
    write_audio,
    write_clip,
    write_gif,
)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip | Path]:
    folder = tmp_path_factory.mktemp("media")
    clips: dict[str, Clip | Path] = {
        "mp4": write_clip(folder / "h264.mp4", "libx264", 25, list(range(30))),
        "avi": write_clip(folder / "mpeg4.avi", "mpeg4", 25, list(range(30))),
        "mkv": write_clip(folder / "h264_30fps.mkv", "libx264", 30, list(range(30))),
        "mpg": write_clip(folder / "mpeg2.mpg", "mpeg2video", 25, list(range(30)), "mpeg"),
        "gif": write_gif(folder / "anim.gif", 20, 10),
        "vfr": write_clip(folder / "vfr.mp4", "libx264", 90, vfr_stamps(21)),
        "10fps": write_clip(folder / "10fps.mp4", "libx264", 10, list(range(20))),
        "4fps": write_clip(folder / "4fps.mp4", "libx264", 4, list(range(10))),
        "one": write_clip(folder / "one.mp4", "libx264", 25, [0]),
        "raw": write_clip(folder / "raw.h264", "libx264", 25, list(range(10)), "h264"),
    }
    clips["absurd.avi"] = write_absurd_rate_avi(folder / "absurd.avi")
    for degrees in (90, -90, 180):
        clips[f"rotated{degrees}"] = write_clip(
            folder / f"rotated{degrees}.mp4", "libx264", 25, list(range(10)), rotation=degrees
        )
    for name, extension in (("png.mp4", ".png"), ("jpeg.mp4", ".jpg")):
        clips[name] = folder / name
        clips[name].write_bytes(cv2.imencode(extension, picture(3)[:, :, ::-1])[1].tobytes())
    if "libvpx" in av.codecs_available:
        clips["webm"] = write_clip(folder / "vp8.webm", "libvpx", 25, list(range(30)))

    faststart = {"movflags": "faststart"}  # index first, so a cut falls inside the frames
    noisy = write_clip(folder / "noise.mp4", "libx264", 25, list(range(30)), None, faststart, True)
    data = noisy.path.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    damaged = bytearray(data)
    damaged[len(data) // 3 : len(data) // 2] = bytes(len(data) // 2 - len(data) // 3)
    (folder / "damaged.mp4").write_bytes(damaged)
    data = clips["mp4"].path.read_bytes()  # index (moov) at the end: its first half has none
    (folder / "no_index.mp4").write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    (folder / "gif_named.mp4").write_bytes(clips["gif"].path.read_bytes())
    write_audio(folder / "audio.m4a")
    for name in ("truncated.mp4", "damaged.mp4", "no_index.mp4", "empty.mp4", "text.mp4"):
        clips[name] = folder / name
    clips["gif_named.mp4"] = folder / "gif_named.mp4"
    clips["audio"] = folder / "audio.m4a"
    clips["missing"] = folder / "missing.mp4"
    return clips


def clip(media: dict[str, Clip | Path], name: str) -> Clip:
    if name not in media:
        pytest.skip(f"the bundled FFmpeg cannot encode {name}")
    found = media[name]
    assert isinstance(found, Clip)
    return found


def expected_sources(pts: tuple[float, ...], count: int) -> list[int]:
    """The source frame shown at each of the first ``count`` targets k/6 (pts sorted)."""
    times = np.asarray(pts)
    targets = np.arange(count) / 6.0
    return (np.searchsorted(times, targets + TIME_TOLERANCE, side="right") - 1).tolist()


def check_stream(video: DecodedVideo, source: Clip, time_atol: float = 1e-6) -> None:
    """Shape, grid and identity of every chosen frame."""
    chosen = select_frames(source.pts)
    assert video.frames.shape == (len(chosen), HEIGHT, WIDTH, 3)
    assert video.frames.dtype == np.uint8
    assert video.times.dtype == np.float64
    assert np.all(np.diff(video.times) > 0)
    np.testing.assert_allclose(video.times, [source.pts[i] for i in chosen], atol=time_atol)
    assert [source_index(frame) for frame in video.frames] == chosen
    assert (video.width, video.height) == (WIDTH, HEIGHT)
    assert video.duration == pytest.approx(source.duration, abs=max(time_atol, 1e-9))


@pytest.mark.parametrize("name", ["mp4", "avi", "mkv", "mpg", "webm", "10fps", "vfr"])
def test_sources_at_6fps_or_faster_give_one_frame_per_target(media, name):
    source = clip(media, name)
    video = decode_video(source.path)
    count = math.ceil(source.duration * 6)
    assert len(video.times) == count
    # The frame shown at k/6 s, found from the known source timeline.
    assert [source_index(frame) for frame in video.frames] == expected_sources(source.pts, count)
    # Matroska/WebM store milliseconds.
    check_stream(video, source, time_atol=1e-3 if name in ("mkv", "webm") else 1e-6)
    assert video.backend == "pyav"
    rate = 1 / np.median(np.diff(source.pts))
    if name != "vfr":
        assert video.source_fps == pytest.approx(rate)


def test_25fps_grid(media):
    video = decode_video(clip(media, "mp4").path)
    # 1.2 s at 25 fps: the frames shown at 0, 1/6, ... 7/6 s are 0, 4, 8, 12, 16, 20, 25, 29.
    assert [source_index(frame) for frame in video.frames] == [0, 4, 8, 12, 16, 20, 25, 29]
    np.testing.assert_allclose(video.times, np.array([0, 4, 8, 12, 16, 20, 25, 29]) / 25)


def test_gif_at_10fps(media):
    source = clip(media, "gif")
    video = decode_video(source.path)
    assert len(video.times) == 12  # 2 s
    check_stream(video, source)
    assert video.source_fps == pytest.approx(10)


def test_slower_source_keeps_each_frame_once(media):
    source = clip(media, "4fps")
    video = decode_video(source.path)
    assert [source_index(frame) for frame in video.frames] == list(range(10))
    np.testing.assert_allclose(video.times, np.arange(10) / 4)
    check_stream(video, source)


def test_vfr_timestamps_are_used(media):
    source = clip(media, "vfr")
    video = decode_video(source.path)
    # pts in 1/90 s: 0, 3, 12, 15, 24, 27, 36, 39, ...; targets k/6 s = 15k/90 s. 21 frames over
    # 4/3 s plus a median gap of 1/15 s: 1.4 s -> 9 targets, each showing a different frame.
    assert [source_index(frame) for frame in video.frames] == [0, 3, 5, 7, 10, 13, 15, 17, 20]
    np.testing.assert_allclose(video.times, np.array([0, 15, 27, 39, 60, 75, 87, 99, 120]) / 90)


def test_one_frame_video(media):
    video = decode_video(clip(media, "one").path)
    assert video.frames.shape == (1, HEIGHT, WIDTH, 3)
    assert video.times.tolist() == [0.0]
    assert video.duration == pytest.approx(1 / 6)


def test_stream_without_timestamps_uses_the_frame_rate(media):
    video = decode_video(clip(media, "raw").path)
    np.testing.assert_allclose(video.times, [0.0, 0.16, 0.32])
    assert [source_index(frame) for frame in video.frames] == [0, 4, 8]


def test_iter_frames_matches_decode_video(media):
    path = clip(media, "avi").path
    video = decode_video(path)
    streamed = list(iter_frames(path))
    assert [time for time, _ in streamed] == video.times.tolist()
    np.testing.assert_array_equal(np.stack([frame for _, frame in streamed]), video.frames)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_max_frames_keeps_a_prefix(media, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    path = clip(media, "mp4").path
    full = decode_video(path, backend=backend)
    part = decode_video(path, backend=backend, max_frames=3)
    np.testing.assert_array_equal(part.times, full.times[:3])
    np.testing.assert_array_equal(part.frames, full.frames[:3])
    assert part.duration == pytest.approx(9 / 25, abs=1e-6)  # the source frame after 8/25 s
    whole = decode_video(path, backend=backend, max_frames=len(full.times))
    assert whole.duration == pytest.approx(full.duration)


def test_real_videos(shared_dir: Path):
    videos = shared_dir / "data" / "videos"
    bunny = decode_video(videos / "bigbuckbunny.mp4")
    # 132 frames at 25 fps: 5.28 s -> ceil(31.68) = 32 frames.
    assert bunny.frames.shape == (32, 720, 1280, 3)
    assert bunny.duration == pytest.approx(5.28)
    expected = [math.floor(25 * k / 6 + 25 * TIME_TOLERANCE) / 25 for k in range(32)]
    np.testing.assert_allclose(bunny.times, expected)
    city = decode_video(videos / "cityCC0.mpg")
    # 190 frames at 25 fps, starting at 0.54 s in the MPEG-PS clock: 7.6 s -> 46 frames.
    assert city.frames.shape == (46, 405, 720, 3)
    assert city.times[0] == 0.0
    assert city.duration == pytest.approx(7.6)
    info = probe(videos / "bigbuckbunny.mp4")
    assert (info.width, info.height, info.frame_count, info.codec) == (1280, 720, 132, "h264")
    assert info.source_fps == pytest.approx(25)


def test_probe_reads_the_header(media):
    info = probe(clip(media, "mp4").path)
    assert (info.width, info.height, info.frame_count) == (WIDTH, HEIGHT, 30)
    assert info.source_fps == pytest.approx(25)
    assert info.duration == pytest.approx(1.2)
    assert info.codec == "h264"
    assert probe(clip(media, "gif").path).container == "gif"


FAILURES = [
    ("empty.mp4", "empty file"),
    ("text.mp4", "not a video: "),
    ("audio", "no video stream"),
    ("no_index.mp4", "not a video: "),
    ("missing", "no such file"),
]


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize(("name", "reason"), FAILURES)
def test_unreadable_files_raise_with_a_reason(media, name, reason, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    with pytest.raises(DecodeError) as raised:
        decode_video(media[name], backend=backend)
    assert str(raised.value).startswith(reason)
    if backend == "pyav":
        with pytest.raises(DecodeError, match=f"^{reason}"):
            probe(media[name])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("fifo", "not a regular file but a named pipe (FIFO)"),
        ("device", "not a regular file but a character device"),
        ("folder", "not a regular file but a folder"),
        ("loop", "a symbolic link that loops (it points back at itself)"),
        ("broken", "a broken symbolic link (to gone.mp4, which does not exist)"),
        ("unreadable", "cannot read it: Permission denied"),
    ],
)
def test_what_is_not_a_readable_file_is_named_as_it_is(media, tmp_path, monkeypatch, kind, reason):
    """A FIFO, a device and a looping link were "no such file"; a file without read permission
    was "not a video: Permission denied" (chmod does not stop root: av.open stands in)."""
    path = tmp_path / f"{kind}.mp4"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "broken":
        path.symlink_to("gone.mp4")
    else:
        path = media["text.mp4"]

        def refused(*args, **kwargs):
            raise av.error.PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(av, "open", refused)
    with pytest.raises(DecodeError, match=f"^{re.escape(reason)}$"):
        decode_video(path)
    if kind != "unreadable":  # refused before the decoder runs, in one line
        expected = f"cannot read the video {path}: {reason}"
        with pytest.raises(InvalidInput, match=f"^{re.escape(expected)}$"):
            check_video_file(path)
    with pytest.raises(MissingInput, match=r"^no video at "):
        check_video_file(tmp_path / "absent.mp4")


@pytest.mark.parametrize(
    ("name", "detail"),
    [("truncated.mp4", "the file ends inside a packet"), ("damaged.mp4", "Invalid data")],
)
def test_truncated_or_damaged_file(media, name, detail):
    with pytest.raises(DecodeError, match=rf"^truncated or corrupt: {detail}"):
        decode_video(media[name])
    streamed = []
    with pytest.raises(DecodeError, match=r"^truncated or corrupt: "):
        for item in iter_frames(media[name]):
            streamed.append(item)
    assert streamed  # the frames before the damage were delivered first


def test_unknown_backend(media):
    with pytest.raises(ValueError, match="pyav, decord"):
        decode_video(clip(media, "mp4").path, backend="opencv")


@pytest.mark.parametrize("name", ["gif", "gif_named.mp4"])
def test_decord_refuses_gifs(media, name):
    pytest.importorskip("decord")
    path = media[name] if isinstance(media[name], Path) else media[name].path
    with pytest.raises(DecodeError, match=r"decord cannot read GIF.*pyav backend"):
        decode_video(path, backend="decord")


def test_decord_missing_says_how_to_install(media, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)
    with pytest.raises(ImportError, match=r"pip install decord==0\.6\.0.*pyav"):
        decode_video(clip(media, "mp4").path, backend="decord")


@pytest.mark.parametrize("name", ["mp4", "avi", "mkv", "vfr", "10fps", "4fps"])
def test_backends_agree(media, name):
    pytest.importorskip("decord")
    source = clip(media, name)
    ours = decode_video(source.path)
    theirs = decode_video(source.path, backend="decord")
    assert theirs.backend == "decord"
    # decord reports float32 seconds.
    np.testing.assert_allclose(theirs.times, ours.times, atol=1e-5)
    assert theirs.duration == pytest.approx(ours.duration, abs=1e-5)
    assert [source_index(frame) for frame in theirs.frames] == [
        source_index(frame) for frame in ours.frames
    ]
    assert theirs.frames.shape == ours.frames.shape
    difference = np.abs(theirs.frames.astype(np.int16) - ours.frames.astype(np.int16))
    assert difference.mean() < 2.0


def test_backends_agree_on_a_real_video(shared_dir: Path):
    pytest.importorskip("decord")
    path = shared_dir / "data" / "videos" / "bigbuckbunny.mp4"
    ours, theirs = decode_video(path), decode_video(path, backend="decord")
    np.testing.assert_allclose(theirs.times, ours.times, atol=1e-5)
    assert theirs.frames.shape == ours.frames.shape == (32, 720, 1280, 3)


def test_absurd_declared_frame_rate_keeps_the_first_frame(media):
    # 4e9 fps in the AVI header: all ten frames fall within the first millisecond.
    video = decode_video(media["absurd.avi"])
    assert video.frames.shape == (1, HEIGHT, WIDTH, 3)
    assert video.times.tolist() == [0.0]
    assert source_index(video.frames[0]) == 0


@pytest.mark.parametrize("name", ["png.mp4", "jpeg.mp4"])
def test_an_image_named_mp4_is_a_one_frame_video(media, name):
    video = decode_video(media[name])
    assert video.frames.shape == (1, HEIGHT, WIDTH, 3)
    assert source_index(video.frames[0]) == 3


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotation_metadata_turns_frames_upright(media, degrees, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    source = clip(media, f"rotated{degrees}")
    video = decode_video(source.path, backend=backend)
    turns = (degrees // 90) % 4
    portrait = turns % 2 == 1
    assert (video.width, video.height) == ((HEIGHT, WIDTH) if portrait else (WIDTH, HEIGHT))
    assert video.frames.shape[1:] == (video.height, video.width, 3)
    # Counter-clockwise display rotation: turning back clockwise restores the coded picture.
    assert [source_index(np.rot90(f, -turns)) for f in video.frames] == select_frames(source.pts)
    with av.open(str(source.path)) as container:  # the players' view of the same file
        assert next(container.decode(video=0)).rotation % 360 == degrees % 360


def test_decoder_choice_is_checked_before_decoding(monkeypatch):
    check_decoder("pyav")
    with pytest.raises(InvalidInput, match="pyav, decord"):
        check_decoder("opencv")
    monkeypatch.setitem(sys.modules, "decord", None)
    with pytest.raises(InvalidInput, match=r"pip install decord"):
        check_decoder("decord")
