"""Extraction runs end to end on real and generated videos (random weights, small detector input).

The real videos are the bundled samples (data/sample); the GIF/AVI/MKV/VFR/one-frame variants are
written from them or generated at test time. Bad files are mixed in: they must be recorded and
skipped while the rest is stored.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from masn.extract.config import ExtractionConfig
from masn.extract.decode import decode_video
from masn.extract.detector import DetectorConfig
from masn.extract.networks import FeatureNetworks
from masn.extract.runner import RunOptions, extract_features
from masn.extract.show import show
from masn.extract.sources import list_videos
from masn.extract.store import FIELDS, FeatureStore
from tests.media import vfr_stamps, write_audio, write_clip

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "sample" / "videos"
SMALL = ExtractionConfig(detector=DetectorConfig(min_size=96, max_size=160, post_nms_top_n=12))
SMALL_FLAGS = ["--min-size", "96", "--max-size", "160", "--proposals", "12"]
GOOD = {"bigbuckbunny.mp4", "cityCC0.mpg", "bunny.gif", "bunny.avi", "bunny.mkv", "vfr.mp4"}
GOOD |= {"single.mp4", "bunny.webm"}
BAD = {"empty.mp4": "empty file", "notes.mp4": "not a video", "sound.mp4": "no video stream"}
BAD |= {"truncated.mp4": "truncated or corrupt"}


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
    from masn.extract.i3d import I3DResNet50

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
        with fast._autocast(torch.device("cpu")):
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
