"""Extraction runs end to end on real and generated videos (random weights, small detector input).

The real videos are the bundled samples (masn/pipeline/examples/sample); the GIF/AVI/MKV/VFR/
one-frame variants are written from them or generated at test time. Bad files are mixed in:
they must be recorded and skipped while the rest is stored.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from masn.errors import InvalidInput
from masn.extract.bench import StandInNetworks
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.run.collection import run_extraction
from masn.extract.run.runner import (
    RunSummary,
    extract_features,
    failures_path,
)
from masn.extract.settings import DetectorConfig, ExtractionConfig, RunOptions
from masn.extract.show import show
from masn.extract.store.parts import PartWriter
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import FIELDS
from masn.extract.store.writer import StoreWriter
from masn.extract.video import inputs
from masn.extract.video.decode import decode_video
from masn.extract.video.sources import VideoSource, list_videos
from masn.pipeline.examples.demo_sample import SAMPLE_DIR
from masn.runtime import autocast
from tests.builders import (
    HEIGHT,
    WIDTH,
    picture,
    vfr_stamps,
    write_absurd_rate_avi,
    write_audio,
    write_clip,
    write_sized,
)

SAMPLES = SAMPLE_DIR / "videos"
SMALL = ExtractionConfig(detector=DetectorConfig(min_size=96, max_size=160, post_nms_top_n=12))
SMALL_FLAGS = ["--min-size", "96", "--max-size", "160", "--proposals", "12"]
GOOD = {"bigbuckbunny.mp4", "cityCC0.mpg", "bunny.gif", "bunny.avi", "bunny.mkv", "vfr.mp4"}
GOOD |= {"single.mp4", "bunny.webm"}
BAD = {"empty.mp4": "empty file", "notes.mp4": "not a video", "sound.mp4": "no video stream"}
BAD |= {"truncated.mp4": "truncated or corrupt"}
FASTSTART = {"movflags": "faststart"}  # index first, so a cut falls inside the frames


def transcode(source: Path, target: Path, codec: str, seconds: float, width: int = 160) -> None:
    """The first ``seconds`` of ``source``, scaled to ``width``, re-encoded with ``codec``."""
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        video = reader.streams.video[0]
        height = round(video.height * width / video.width / 2) * 2
        pixel_format = "rgb8" if codec == "gif" else "yuv420p"
        stream = writer.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for index, frame in enumerate(reader.decode(video)):
            if frame.time > seconds:
                break
            scaled = frame.reformat(width=width, height=height, format=pixel_format)
            scaled.pts, scaled.time_base = index, Fraction(1, 25)
            writer.mux(stream.encode(scaled))
        writer.mux(stream.encode())


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("collection")
    for name in ("bigbuckbunny.mp4", "cityCC0.mpg"):
        shutil.copy(SAMPLES / name, folder / name)
    bunny = SAMPLES / "bigbuckbunny.mp4"
    transcode(bunny, folder / "bunny.gif", "gif", 1.2)
    transcode(bunny, folder / "bunny.avi", "mpeg4", 1.0)
    transcode(bunny, folder / "bunny.mkv", "libx264", 1.0)
    transcode(bunny, folder / "bunny.webm", "libvpx", 1.0)
    write_clip(folder / "vfr.mp4", "libx264", 90, vfr_stamps(12))
    write_clip(folder / "single.mp4", "libx264", 25, [0])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are not frames")
    write_audio(folder / "sound.mp4")
    whole = folder / "whole.mp4"
    write_clip(whole, "libx264", 25, list(range(30)), options={"movflags": "faststart"})
    (folder / "truncated.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return folder


@pytest.fixture(scope="module")
def networks() -> FeatureNetworks:
    return FeatureNetworks.random(SMALL)


@pytest.fixture(scope="module")
def run(collection: Path, networks: FeatureNetworks, tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("run") / "features.h5"
    options = RunOptions(device="cpu", batch_size=4, workers=0)
    summary = extract_features(list_videos(collection, "folder"), store, SMALL, networks, options)
    return summary


def test_good_videos_are_stored_and_bad_ones_recorded(run):
    assert (run.stored, run.failed, run.skipped) == (len(GOOD), len(BAD), 0)
    with FeatureStore(run.store) as store:
        assert set(store.keys()) == GOOD
        assert store.provenance.weights["detector"].startswith("random")
    failures = [json.loads(line) for line in run.failures.read_text().splitlines()]
    assert {f["key"]: f["reason"].split(":")[0] for f in failures} == BAD


def test_sampled_frames_follow_the_duration_and_every_stream_agrees(run):
    with FeatureStore(run.store) as store:
        for key in store:
            record = store.read(key)
            times = decode_video(record.path).times
            assert record.frames == len(times), key
            sampled = math.ceil(len(times) / 4)
            np.testing.assert_allclose(record.frame_times, times[::4], err_msg=key)
            for name in FIELDS:
                assert getattr(record, name).shape[0] == sampled, (key, name)
            assert record.appearance_objects.shape == (sampled, 10, 2048)
            assert record.motion_objects.shape == (sampled, 10, 2048)


def test_real_videos_give_the_frame_counts_their_duration_implies(run):
    with FeatureStore(run.store) as store:
        bunny, city = store.read("bigbuckbunny.mp4"), store.read("cityCC0.mpg")
    assert (bunny.width, bunny.height, bunny.frames, len(bunny.frame_times)) == (1280, 720, 32, 8)
    assert (city.width, city.height, city.frames, len(city.frame_times)) == (720, 405, 46, 12)


def test_boxes_lie_inside_the_frame_and_features_are_finite(run):
    with FeatureStore(run.store) as store:
        for key in store:
            record = store.read(key)
            x1, y1, x2, y2 = np.moveaxis(record.boxes, -1, 0)
            assert (x1 >= 0).all() and (y1 >= 0).all(), key
            assert (x2 <= record.width).all() and (y2 <= record.height).all(), key
            assert (x2 >= x1).all() and (y2 >= y1).all(), key
            expected = record.geometry_from_boxes(record.boxes, record.width, record.height)
            np.testing.assert_allclose(record.box_geometry, expected, rtol=1e-6)
            for name in ("appearance", "appearance_objects", "motion", "motion_objects"):
                assert np.isfinite(getattr(record, name)).all(), (key, name)
            assert (record.object_labels < 1600).all() and (record.attribute_labels < 400).all()


def _arrays(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with FeatureStore(path) as store:
        return {key: vars(store.read(key)) for key in store}


def _assert_same(first: Path, second: Path, exact: bool = True) -> None:
    one, two = _arrays(first), _arrays(second)
    assert one.keys() == two.keys()
    for key in one:
        for name in FIELDS:
            a, b = one[key][name], two[key][name]
            if exact or name in ("object_labels", "attribute_labels", "frame_times"):
                np.testing.assert_array_equal(a, b, err_msg=f"{key} {name}")
            else:  # another batch composition: float rounding differs, the choices do not
                np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-3, err_msg=f"{key} {name}")


def _subset(collection: Path, tmp_path: Path) -> list:
    """Three short videos of the collection (rerunning everything would be slow on CPU)."""
    folder = tmp_path / "subset"
    folder.mkdir()
    for name in ("bunny.avi", "vfr.mp4", "single.mp4"):
        shutil.copy(collection / name, folder / name)
    return list_videos(folder, "folder")


def test_features_are_deterministic(collection, networks, tmp_path):
    subset = _subset(collection, tmp_path)
    first, second = tmp_path / "first.h5", tmp_path / "second.h5"
    for out in (first, second):
        extract_features(subset, out, SMALL, networks, RunOptions("cpu", 4, workers=0))
    _assert_same(first, second)


def test_batching_across_videos_and_workers_keeps_the_features(collection, networks, tmp_path):
    subset = _subset(collection, tmp_path)
    alone, pooled = tmp_path / "alone.h5", tmp_path / "pooled.h5"
    extract_features(subset, alone, SMALL, networks, RunOptions("cpu", 1, workers=0))
    extract_features(subset, pooled, SMALL, networks, RunOptions("cpu", 3, workers=2))
    _assert_same(alone, pooled, exact=False)


def test_rerun_skips_stored_videos_and_retries_failed_ones(run, collection, networks):
    options = RunOptions(device="cpu", batch_size=4, workers=0)
    sources = list_videos(collection, "folder")
    again = extract_features(sources, run.store, SMALL, networks, options)
    assert (again.stored, again.skipped, again.failed) == (0, len(GOOD), len(BAD))
    assert again.ok


def test_show_draws_the_sampled_frames(run, tmp_path):
    picture = show("cityCC0.mpg", run.store, tmp_path / "city.png")
    assert picture.stat().st_size > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(picture).shape[2] in (3, 4)


def test_motion_of_a_whole_frame_box_is_the_global_motion(networks):
    clips = torch.randint(0, 255, (2, 8, 224, 224, 3), dtype=torch.uint8)
    boxes = torch.tensor([[[0.0, 0.0, 320.0, 240.0]] * 10, [[0.0, 0.0, 64.0, 48.0]] * 10])
    with torch.no_grad():
        motion, objects = networks.motion(clips, boxes, torch.tensor([[320, 240], [64, 48]]))
    torch.testing.assert_close(objects[:, 0], motion, rtol=1e-4, atol=1e-6)


def test_i3d_nonlocal_layout_strides_time_by_eight():
    from masn.extract.networks.i3d import I3DResNet50

    network = I3DResNet50().eval()
    with torch.no_grad():
        assert network(torch.zeros(1, 3, 8, 224, 224)).shape == (1, 2048, 1, 7, 7)
        assert network(torch.zeros(1, 3, 16, 224, 224)).shape == (1, 2048, 2, 7, 7)


def test_bf16_autocast_keeps_global_features_close_to_fp32(collection):
    config = ExtractionConfig(detector=SMALL.detector)
    exact = FeatureNetworks.random(config)
    fast = FeatureNetworks.random(ExtractionConfig(detector=SMALL.detector, precision="bf16"))
    frames = torch.from_numpy(decode_video(collection / "bunny.avi").frames[:4:2].copy())
    small = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(224, 224))
    small = small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous()
    clips = small.unsqueeze(1).expand(-1, 8, -1, -1, -1).contiguous()
    boxes = torch.tensor([[[10.0, 10.0, 100.0, 80.0]] * 10] * len(small))
    sizes = torch.tensor([[160, 90]] * len(small))
    with torch.no_grad():
        a32 = exact.appearance(small)
        m32, o32 = exact.motion(clips, boxes, sizes)
        with autocast(torch.device("cpu"), fast.config.precision):
            a16 = fast.appearance(small).float()
            m16, o16 = fast.motion(clips, boxes, sizes)
    for ours, reference in ((a16, a32), (m16, m32), (o16, o32)):
        assert ((ours - reference).norm() / reference.norm()).item() < 0.05


def _cli(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "masn", "extract", *args]


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("short")
    for index in range(6):
        write_clip(folder / f"clip{index}.mp4", "libx264", 25, list(range(8 + 4 * index)))
    return folder


@pytest.fixture(scope="module")
def reference_store(short_clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "all.h5"
    flags = ["--batch-size", "1", "--workers", "0", "--device", "cpu", *SMALL_FLAGS]
    command = _cli("--videos", str(short_clips), "--out", str(out), "--random-weights", *flags)
    subprocess.run(command, check=True, env=_quiet_env(), capture_output=True)
    return out


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_loses_nothing(short_clips, reference_store, tmp_path):
    out = tmp_path / "killed.h5"
    flags = ["--batch-size", "1", "--workers", "0", "--device", "cpu", *SMALL_FLAGS]
    command = _cli("--videos", str(short_clips), "--out", str(out), "--random-weights", *flags)
    process = subprocess.Popen(command, env=_quiet_env(), stderr=subprocess.PIPE)
    parts = Path(str(out) + ".parts")
    deadline = time.monotonic() + 240
    while len(list(parts.glob("*.h5"))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    committed = {p.name for p in parts.glob("*.h5")}
    assert 2 <= len(committed) < 6 and not out.exists()

    rerun = subprocess.run(command, env=_quiet_env(), capture_output=True, text=True, check=True)
    assert f"{len(committed)} of 6 videos are already in" in rerun.stderr
    assert f"stored {6 - len(committed)} videos" in rerun.stderr
    _assert_same(reference_store, out)


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(short_clips, reference_store, tmp_path):
    out = tmp_path / "sharded.h5"
    flags = ["--batch-size", "1", "--workers", "0", "--device", "cpu", *SMALL_FLAGS]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "masn",
        "extract",
        "--videos",
        str(short_clips),
        "--out",
        str(out),
        "--random-weights",
        *flags,
    ]
    subprocess.run(command, check=True, env=_quiet_env(), capture_output=True, timeout=600)
    shards = sorted(tmp_path.glob("sharded.shard-*-of-0002.h5"))
    assert len(shards) == 2
    with FeatureStore(shards[0]) as first, FeatureStore(shards[1]) as second:
        assert not set(first.keys()) & set(second.keys())
        assert len(first) + len(second) == 6
    _assert_same(reference_store, out)


# Robustness: every kind of file users have, mixed with good ones. Tiny networks (32-pixel
# detector input, 32-pixel frames) keep these fast; StandInNetworks where only the run's
# bookkeeping is tested.
TINY = ExtractionConfig(
    frame_size=32, detector=DetectorConfig(min_size=32, max_size=64, post_nms_top_n=4)
)
ROOT = os.geteuid() == 0  # chmod 000 does not stop root
MESSY_STORED = {"good.mp4", "sub/good.avi", "absurd.avi", "tiny1x1.mp4", "tiny17x9.mp4"}
MESSY_STORED |= {"tall16x2000.mp4", "image.mp4", "caf%E9.mp4", "portrait.mp4"}
MESSY_FAILED = {"empty.mp4": "empty file", "notes.mp4": "not a video"}
MESSY_FAILED |= {"truncated.mp4": "truncated or corrupt"}


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("messy")
    (folder / "sub").mkdir()
    good = write_clip(folder / "good.mp4", "libx264", 25, list(range(10))).path
    write_clip(folder / "sub" / "good.avi", "mpeg4", 25, list(range(10)))
    write_absurd_rate_avi(folder / "absurd.avi")
    write_sized(folder / "tiny1x1.mp4", 1, 1)
    write_sized(folder / "tiny17x9.mp4", 17, 9)
    write_sized(folder / "tall16x2000.mp4", 16, 2000)
    (folder / "image.mp4").write_bytes(cv2.imencode(".png", picture(2))[1].tobytes())
    shutil.copy(good, os.path.join(os.fsencode(folder), b"caf\xe9.mp4"))
    write_clip(folder / "portrait.mp4", "libx264", 25, list(range(10)), rotation=-90)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are not frames")
    whole = write_clip(folder / "whole.mp4", "libx264", 25, list(range(30)), None, FASTSTART, True)
    (folder / "truncated.mp4").write_bytes(
        whole.path.read_bytes()[: whole.path.stat().st_size // 2]
    )
    whole.path.unlink()
    private = folder / "private"
    private.mkdir()
    shutil.copy(good, private / "hidden.mp4")
    private.chmod(0)
    yield folder
    private.chmod(0o755)


@pytest.fixture(scope="module")
def messy_runs(messy: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two `masn extract` runs over the messy folder: exit codes, store, failures, log."""
    store = tmp_path_factory.mktemp("messy-run") / "features.h5"
    options = RunOptions("cpu", batch_size=4, workers=1)
    handler = _Collect()
    logging.getLogger("masn").addHandler(handler)
    try:
        codes = [
            run_extraction(messy, "folder", store, TINY, options, None, random_weights=True)
            for _ in range(2)
        ]
    finally:
        logging.getLogger("masn").removeHandler(handler)
    return codes, store, handler.lines


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_messy_collection_is_stored_or_recorded_twice_over(messy_runs):
    codes, store, lines = messy_runs
    assert codes == [0, 0]
    expected = MESSY_STORED | ({"private/hidden.mp4"} if ROOT else set())
    with FeatureStore(store) as features:
        assert set(features.keys()) == expected
    entries = [json.loads(line) for line in failures_path(store).read_text().splitlines()]
    assert sorted(entry["key"] for entry in entries) == sorted(MESSY_FAILED)  # once each
    for entry in entries:
        assert entry["reason"].startswith(MESSY_FAILED[entry["key"]]), entry
        assert (entry["stage"], entry["attempts"]) == ("decode", 2)
        assert Path(entry["path"]).name == entry["key"] and entry["time"]
    if not ROOT:
        assert any("could not read 1 folder(s)" in line and "private" in line for line in lines)


def test_odd_videos_follow_the_documented_rules(messy_runs):
    _, store, _ = messy_runs
    with FeatureStore(store) as features:
        single = {key: features.read(key) for key in ("absurd.avi", "image.mp4")}
        for key, record in single.items():  # one frame kept, not zero
            assert (record.frames, len(record.frame_times)) == (1, 1), key
        portrait = features.read("portrait.mp4")
        assert (portrait.width, portrait.height) == (HEIGHT, WIDTH)
        escaped = features.read("caf%E9.mp4")
        assert os.fsencode(escaped.path).endswith(b"/caf\xe9.mp4")
        assert Path(escaped.path).is_file()
        for key, size in (("tiny1x1.mp4", (1, 1)), ("tiny17x9.mp4", (17, 9))):
            record = features.read(key)
            assert (record.width, record.height) == size
            x1, y1, x2, y2 = np.moveaxis(record.boxes, -1, 0)
            assert (x1 >= 0).all() and (y1 >= 0).all(), key
            assert (x2 <= size[0]).all() and (y2 <= size[1]).all(), key
            assert np.isfinite(record.appearance_objects).all()
        tall = features.read("tall16x2000.mp4")
        assert (tall.boxes[..., 2] <= 16).all() and (tall.boxes[..., 3] <= 2000).all()


def _stand_ins(tmp_path: Path, names: dict[str, str]) -> list[VideoSource]:
    """Short clips (or text files where the value is 'text'): 'clip' has one sampled frame,
    'long' four, 'noise' four of random pixels (bright: the others' frames are darker)."""
    for name, kind in names.items():
        path = tmp_path / "videos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "text":
            path.write_text("not a video")
        elif kind == "clip":
            write_clip(path, "libx264", 25, list(range(10)))
        else:  # 2.4 s at 10 fps: 15 frames at 6 fps, 4 sampled
            write_clip(path, "libx264", 10, list(range(24)), noise=kind == "noise")
    return list_videos(tmp_path / "videos", "folder")


def _bright(frames: np.ndarray | torch.Tensor) -> bool:
    return float(frames.float().mean() if isinstance(frames, torch.Tensor) else frames.mean()) > 115


STAND_IN = RunOptions("cpu", batch_size=4, workers=0)


def _run(sources, store: Path, networks=None, **options) -> RunSummary:
    networks = networks if networks is not None else StandInNetworks(TINY)
    return extract_features(sources, store, TINY, networks, replace(STAND_IN, **options))


def _failures(store: Path) -> dict[str, dict]:
    path = failures_path(store)
    if not path.exists():
        return {}
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({entry["key"] for entry in entries}) == len(entries)  # one line per key
    return {entry["key"]: entry for entry in entries}


class _Poisoned(StandInNetworks):
    """Fails on any batch that holds a frame of random pixels (the 'noise' clip)."""

    def forward(self, images, scales, frames, clips, sizes):
        if any(_bright(frame) for frame in frames):
            raise RuntimeError("poisoned batch")
        return super().forward(images, scales, frames, clips, sizes)


def test_a_network_failure_fails_only_the_video_that_causes_it(tmp_path, caplog):
    sources = _stand_ins(tmp_path, {"a.mp4": "long", "b.mp4": "noise", "c.mp4": "long"})
    with caplog.at_level(logging.WARNING):  # batches of 3: a a a | a b b (fails) | ...
        summary = _run(sources, tmp_path / "s.h5", _Poisoned(TINY), batch_size=3)
    assert "running them one video at a time" in caplog.text  # a mixed batch failed
    assert (summary.stored, summary.failed) == (2, 1)
    with FeatureStore(summary.store) as store:
        assert sorted(store) == ["a.mp4", "c.mp4"]
        assert all(store.num_frames(key) == 4 for key in store)
    failure = _failures(summary.store)["b.mp4"]
    assert failure["stage"] == "network" and "RuntimeError: poisoned batch" in failure["reason"]


def test_worker_and_writer_errors_fail_one_video_each(tmp_path, monkeypatch):
    names = {"a.mp4": "long", "b.mp4": "long", "c.mp4": "noise", "d.mp4": "long"}
    sources = _stand_ins(tmp_path, names)
    blocks: list[tuple[str, int]] = []
    append, preprocess = PartWriter.append, inputs.preprocess

    def full_disk(part, arrays):
        if part.key == "b.mp4":
            raise OSError(28, "No space left on device")
        blocks.append((part.key, len(arrays["appearance"])))
        append(part, arrays)

    def broken(frame, config):
        if _bright(frame):
            raise ValueError("cannot resize")
        return preprocess(frame, config)

    monkeypatch.setattr(PartWriter, "append", full_disk)
    monkeypatch.setattr(inputs, "preprocess", broken)  # the forked decode worker has it too
    summary = _run(sources, tmp_path / "s.h5", batch_size=2, workers=1)
    assert (summary.stored, summary.failed) == (2, 2)
    with FeatureStore(summary.store) as store:
        assert sorted(store) == ["a.mp4", "d.mp4"]  # d came after c in the same worker
    failures = _failures(summary.store)
    assert failures["b.mp4"]["stage"] == "write"
    assert failures["b.mp4"]["reason"] == "cannot write the part file: No space left on device"
    assert failures["c.mp4"]["stage"] == "preprocess"
    assert failures["c.mp4"]["reason"].startswith("unexpected ValueError: cannot resize")
    # Rows reach the part file as they come (one batch at a time), not all at the end.
    assert max(size for _, size in blocks) <= 2
    assert [size for key, size in blocks if key == "a.mp4"] == [2, 2]


def test_failed_videos_are_retried_once_then_skipped_until_asked(tmp_path, caplog):
    sources = _stand_ins(tmp_path, {"good.mp4": "clip", "bad.mp4": "text"})
    store = tmp_path / "s.h5"
    for attempt in (1, 2):
        summary = _run(sources, store)
        assert (summary.failed, summary.given_up) == (1, 0)
        assert _failures(store)["bad.mp4"]["attempts"] == attempt
    with caplog.at_level(logging.WARNING):
        summary = _run(sources, store)
    assert (summary.failed, summary.given_up, summary.skipped) == (0, 1, 1)
    assert "skipping 1 videos that failed 2 times" in caplog.text
    assert "--retry-failed" in caplog.text
    assert _failures(store)["bad.mp4"]["attempts"] == 2
    assert _run(sources, store, retry_failed=True).failed == 1
    assert _failures(store)["bad.mp4"]["attempts"] == 3
    write_clip(sources[0].path, "libx264", 25, list(range(10)))  # the user fixes the file
    summary = _run(sources, store, retry_failed=True)
    assert (summary.stored, summary.failed) == (1, 0)
    assert not failures_path(store).exists()  # a stored video leaves the failure log


def test_extraction_onto_a_damaged_store_rebuilds_it(tmp_path, monkeypatch, caplog):
    sources = _stand_ins(tmp_path, {"a.mp4": "clip", "b.mp4": "clip", "c.mp4": "clip"})
    store = tmp_path / "s.h5"
    _run(sources[:2], store)
    with monkeypatch.context() as patch:  # c is committed as a part, never consolidated
        patch.setattr(StoreWriter, "consolidate", lambda writer: writer.path)
        _run(sources[2:], store)
    store.write_bytes(store.read_bytes()[:1000])  # cut short
    with pytest.raises(InvalidInput, match=r"s\.h5 is damaged"):
        FeatureStore(store)
    with caplog.at_level(logging.WARNING):
        summary = _run(sources, store)
    (aside,) = tmp_path.glob("s.h5.corrupt-*")
    assert aside.stat().st_size == 1000 and str(aside) in caplog.text
    assert (summary.skipped, summary.stored) == (1, 2)  # the part kept, a and b extracted again
    with FeatureStore(store) as features:
        assert sorted(features) == ["a.mp4", "b.mp4", "c.mp4"]


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one-clip")
    write_clip(folder / "clip.mp4", "libx264", 25, list(range(10)))
    return folder


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder that refuses new files, even to root (sysfs), else a chmod-555 one."""
    if not ROOT:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    if Path("/sys/kernel").is_dir() and not os.access("/sys/kernel", os.W_OK | os.X_OK):
        return Path("/sys/kernel")
    try:
        (Path("/sys") / ".masn-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses root")


def _cuda_absent() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("out-folder", "is a folder; give a file path such as"),
        ("out-devnull", "is not a regular file"),
        ("out-parent-missing", "does not exist; create it first"),
        ("out-read-only", "does not accept new files"),
        ("out-in-use", "another process is writing"),
        ("device-cuda", "--device cuda: this PyTorch"),
        ("device-cuda:3", "--device cuda:3: this PyTorch"),
        ("device-gpu", "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
        ("device-tpu", "unknown device 'tpu'"),
        ("min-size-0", "detector min_size must be a whole number >= 1, got 0"),
        ("proposals-0", r"proposals \(post_nms_top_n\) must be a whole number >= 1, got 0"),
        ("batch-size-0", "batch size must be a whole number >= 1, got 0"),
        ("min-over-max", "larger than max_size"),
        ("decord-missing", "pip install decord"),
        ("videos-empty", "no folder videos found under"),
        ("videos-none", "no folder videos found under"),
    ],
)
def test_cli_mistakes_end_with_one_line_and_exit_2(
    case, message, one_clip, tmp_path, monkeypatch, caplog
):
    from masn.pipeline.cli import main

    videos, out = one_clip, tmp_path / "features.h5"
    flags = ["--random-weights", "--device", "cpu", "--workers", "0", *SMALL_FLAGS]
    if case == "out-folder":
        out = tmp_path
    elif case == "out-devnull":
        out = Path("/dev/null")
    elif case == "out-parent-missing":
        out = tmp_path / "missing" / "features.h5"
    elif case == "out-read-only":
        out = _read_only_folder(tmp_path) / "features.h5"
    elif case.startswith("device-"):
        if case.startswith("device-cuda"):
            _cuda_absent()
        flags += ["--device", case.removeprefix("device-")]
    elif case == "min-size-0":
        flags += ["--min-size", "0"]
    elif case == "proposals-0":
        flags += ["--proposals", "0"]
    elif case == "batch-size-0":
        flags += ["--batch-size", "0"]
    elif case == "min-over-max":
        flags += ["--min-size", "200", "--max-size", "100"]
    elif case == "decord-missing":
        monkeypatch.setitem(sys.modules, "decord", None)
        flags += ["--decoder", "decord"]
    elif case.startswith("videos-"):
        videos = tmp_path / "videos"
        videos.mkdir()
        if case == "videos-none":
            (videos / "notes.txt").write_text("no videos here")
    writer = StoreWriter(out, {}, {}) if case == "out-in-use" else None
    try:
        with caplog.at_level(logging.INFO):
            code = main(["extract", "--videos", str(videos), "--out", str(out), *flags])
    finally:
        if writer is not None:
            writer.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2, caplog.text
    assert len(errors) == 1 and re.search(message, errors[0].getMessage()), caplog.text
    assert "\n" not in errors[0].getMessage() and not errors[0].exc_info
    assert not (tmp_path / "features.h5.parts").exists()  # no work was started


@pytest.mark.parametrize("command", ["show", "extract-merge"])
def test_cli_on_a_damaged_store_says_which_file_and_what_to_do(command, tmp_path, caplog):
    from masn.pipeline.cli import main

    store = tmp_path / "features.h5"
    store.write_text("not a store")
    if command == "show":
        argv = ["show", "clip.mp4", "--store", str(store), "--out", str(tmp_path / "x.png")]
    else:
        argv = ["extract", "--merge", str(store), "--out", str(tmp_path / "merged.h5")]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 2
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"{store} is damaged or not an HDF5 file" in error.getMessage()
    assert "rerun `masn extract`" in error.getMessage()


def test_settings_are_checked_when_built(monkeypatch):
    with pytest.raises(InvalidInput, match="frame_size must be a whole number >= 32"):
        ExtractionConfig(frame_size=8)
    with pytest.raises(InvalidInput, match="fps must be a positive number"):
        ExtractionConfig(fps=float("nan"))
    with pytest.raises(InvalidInput, match="clip_length must be >= 8 for the nonlocal I3D"):
        ExtractionConfig(clip_length=4)
    with pytest.raises(InvalidInput, match="workers must be a whole number >= 0"):
        RunOptions(workers=-1)
    with pytest.raises(InvalidInput, match="unknown decoding backend 'opencv'"):
        RunOptions(decoder="opencv")
    for device in ("gpu", "tpu", "cuda:", "CUDA", "cuda:x", "mps"):
        with pytest.raises(InvalidInput, match="use auto, cpu, cuda or cuda:N"):
            RunOptions(device=device)
    assert RunOptions(device="cuda:1", retry_failed=True).retry_failed


@pytest.mark.slow
def test_memory_does_not_grow_with_the_video_length():
    from masn.extract.bench import run_memory_bench

    report = run_memory_bench(minutes=(0.5, 5.0))
    assert report["bounded"], report
