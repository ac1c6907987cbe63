"""Extraction runs end to end on real and generated videos (random weights, small detector input).

The real videos are the bundled samples (masn/pipeline/examples/sample); the GIF/AVI/MKV/VFR/
one-frame variants are written from them or generated at test time. Bad files are mixed in:
they must be recorded and skipped while the rest is stored. Per-video isolation: an error while
decoding, preprocessing or writing one video fails that video only.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import masn.extract.show
from masn import caller, progress
from masn.errors import DiskFull, InvalidInput
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.networks.vocab import attribute_names, object_names
from masn.extract.run.failure_log import failures_path
from masn.extract.run.runner import extract_features
from masn.extract.settings import RunOptions
from masn.extract.show import show, show_figure
from masn.extract.store.parts import PartWriter
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import FIELDS
from masn.extract.store.writer import StoreWriter
from masn.extract.video import inputs
from masn.extract.video.decode import decode_video
from masn.extract.video.sources import list_videos
from masn.runtime import autocast
from tests.builders import (
    CITY_VIDEO,
    SAMPLE_VIDEO,
    SMALL_EXTRACTION,
    TINY_EXTRACTION,
    assert_same_stores,
    box_corners,
    bright,
    extract_with_stand_ins,
    failure_entries,
    read_png,
    stand_in_videos,
    texts,
    transcode,
    vfr_stamps,
    write_audio,
    write_clip,
)

GOOD = {"bigbuckbunny.mp4", "cityCC0.mpg", "bunny.gif", "bunny.avi", "bunny.mkv", "vfr.mp4"}
GOOD |= {"single.mp4", "bunny.webm"}
BAD = {"empty.mp4": "empty file", "notes.mp4": "not a video", "sound.mp4": "no video stream"}
BAD |= {"truncated.mp4": "truncated or corrupt"}


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("collection")
    bunny = SAMPLE_VIDEO
    shutil.copy(bunny, folder / bunny.name)
    shutil.copy(CITY_VIDEO, folder / CITY_VIDEO.name)
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
    return FeatureNetworks.random(SMALL_EXTRACTION)


@pytest.fixture(scope="module")
def tiny_networks() -> FeatureNetworks:
    """Random networks on 32-pixel frames (the detector's input 32..64 pixels): for the tests of
    the run itself (formats, frame counts, boxes, order, batching, workers, reruns), where the
    frame size does not matter and 224 pixels would only cost time."""
    return FeatureNetworks.random(TINY_EXTRACTION)


@pytest.fixture(scope="module")
def run(collection: Path, tiny_networks: FeatureNetworks, tmp_path_factory):
    store = tmp_path_factory.mktemp("run") / "features.h5"
    options = RunOptions(device="cpu", batch_size=4, workers=0)
    summary = extract_features(
        list_videos(collection, "folder"), store, TINY_EXTRACTION, tiny_networks, options
    )
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


def _subset(collection: Path, tmp_path: Path) -> list:
    """Three short videos of the collection (rerunning everything would be slow on CPU)."""
    folder = tmp_path / "subset"
    folder.mkdir()
    for name in ("bunny.avi", "vfr.mp4", "single.mp4"):
        shutil.copy(collection / name, folder / name)
    return list_videos(folder, "folder")


def test_features_are_deterministic(collection, tiny_networks, tmp_path):
    subset = _subset(collection, tmp_path)
    first, second = tmp_path / "first.h5", tmp_path / "second.h5"
    for out in (first, second):
        options = RunOptions("cpu", 4, workers=0)
        extract_features(subset, out, TINY_EXTRACTION, tiny_networks, options)
    assert_same_stores(first, second)


def test_batching_across_videos_and_workers_keeps_the_features(collection, tiny_networks, tmp_path):
    subset = _subset(collection, tmp_path)
    alone, pooled = tmp_path / "alone.h5", tmp_path / "pooled.h5"
    options = RunOptions("cpu", 1, workers=0)
    extract_features(subset, alone, TINY_EXTRACTION, tiny_networks, options)
    options = RunOptions("cpu", 3, workers=2)
    extract_features(subset, pooled, TINY_EXTRACTION, tiny_networks, options)
    assert_same_stores(alone, pooled, exact=False)


def test_rerun_skips_stored_videos_and_retries_failed_ones(run, collection, tiny_networks):
    options = RunOptions(device="cpu", batch_size=4, workers=0)
    sources = list_videos(collection, "folder")
    again = extract_features(sources, run.store, TINY_EXTRACTION, tiny_networks, options)
    assert (again.stored, again.skipped, again.failed) == (0, len(GOOD), len(BAD))
    assert again.ok


def test_show_draws_the_sampled_frames(run, tmp_path, monkeypatch):
    """The saved figure: one panel per sampled frame (the decoded frame at its time) with every
    box at its pixels, labelled "attribute object (score)"."""
    figures = []
    monkeypatch.setattr(
        masn.extract.show,
        "show_figure",
        lambda *args: figures.append(show_figure(*args)) or figures[-1],
    )
    picture = show("cityCC0.mpg", run.store, tmp_path / "city.png")
    assert picture.stat().st_size > 10_000
    read_png(picture)

    (figure,) = figures
    with FeatureStore(run.store) as store:
        record = store.read("cityCC0.mpg")
    sampled = decode_video(record.path).frames[:: TINY_EXTRACTION.sample_every]
    assert len(sampled) == len(record.frame_times) > 4  # more than one row of panels
    assert figure.get_suptitle() == (  # random networks made the store
        f"RANDOM WEIGHTS: boxes and labels of random networks\ncityCC0.mpg: {len(sampled)} "
        "sampled frames"
    )
    assert len(figure.axes) == len(sampled)  # no empty cells
    drawn = [axis for axis in figure.axes if axis.images]
    assert [axis.get_title() for axis in drawn] == [f"t = {t:.2f} s" for t in record.frame_times]
    objects, attributes = object_names(), attribute_names()
    for index, axis in enumerate(drawn):
        np.testing.assert_array_equal(axis.images[0].get_array(), sampled[index])
        np.testing.assert_allclose(box_corners(axis), record.boxes[index], rtol=1e-6)
        labels = zip(
            record.object_labels[index],
            record.attribute_labels[index],
            record.object_scores[index],
            strict=True,
        )
        assert texts(axis.texts) == [
            f"{attributes[a]} {objects[o]} ({score:.2f})" for o, a, score in labels
        ]


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


def test_bf16_autocast_keeps_global_features_close_to_fp32(collection, networks):
    # The same networks under bf16 autocast, as FeatureNetworks.forward runs them with
    # precision="bf16" (building a second set would only repeat the seeded weights).
    exact = fast = networks
    frames = torch.from_numpy(decode_video(collection / "bunny.avi").frames[:1].copy())
    small = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(224, 224))
    small = small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous()
    clips = small.unsqueeze(1).expand(-1, 8, -1, -1, -1).contiguous()
    boxes = torch.tensor([[[10.0, 10.0, 100.0, 80.0]] * 10] * len(small))
    sizes = torch.tensor([[160, 90]] * len(small))
    with torch.no_grad():
        a32, _ = exact.appearance(small, boxes, sizes)
        m32, o32 = exact.motion(clips, boxes, sizes)
        with autocast(torch.device("cpu"), "bf16"):
            a16 = fast.appearance(small, boxes, sizes)[0].float()
            m16, o16 = fast.motion(clips, boxes, sizes)
    for ours, reference in ((a16, a32), (m16, m32), (o16, o32)):
        assert ((ours - reference).norm() / reference.norm()).item() < 0.05


def test_progress_counts_sampled_frames_and_quiet_hides_it(tmp_path, monkeypatch, capsys):
    """A long video shows progress inside it: one step per sampled frame, not only per video."""
    bars, shown = [], []  # each bar, and whether it was shown when made (closing hides it)
    make = progress.bar

    def recorded(**options):
        bars.append(make(**options))
        shown.append(not bars[-1].disable)
        return bars[-1]

    monkeypatch.setattr(progress, "bar", recorded)
    sources = stand_in_videos(tmp_path, {"long.mp4": "long", "clip.mp4": "clip"})
    assert extract_with_stand_ins(sources, tmp_path / "shown.h5").sampled_frames == 5
    assert [(bar.desc, bar.n, bar.total) for bar in bars] == [
        ("extract", 2, 2),
        ("sampled frames", 5, None),
    ]
    assert shown == [True, True] and "sampled frames: 0frame" in capsys.readouterr().err
    with caller.command_line(quiet=True):
        extract_with_stand_ins(sources, tmp_path / "quiet.h5")
    assert shown[2:] == [False, False] and not capsys.readouterr().err


def test_worker_and_writer_errors_fail_one_video_each(tmp_path, monkeypatch):
    names = {"a.mp4": "long", "b.mp4": "long", "c.mp4": "noise", "d.mp4": "long"}
    sources = stand_in_videos(tmp_path, names)
    blocks: list[tuple[str, int]] = []
    append, preprocess = PartWriter.append, inputs.preprocess

    def full_disk(part, arrays):
        if part.key == "b.mp4":
            raise OSError(28, "No space left on device")
        blocks.append((part.key, len(arrays["appearance"])))
        append(part, arrays)

    def broken(frame, config):
        if bright(frame):
            raise ValueError("cannot resize")
        return preprocess(frame, config)

    monkeypatch.setattr(PartWriter, "append", full_disk)
    monkeypatch.setattr(inputs, "preprocess", broken)  # the forked decode worker has it too
    summary = extract_with_stand_ins(sources, tmp_path / "s.h5", batch_size=2, workers=1)
    assert (summary.stored, summary.failed) == (2, 2)
    with FeatureStore(summary.store) as store:
        assert sorted(store) == ["a.mp4", "d.mp4"]  # d came after c in the same worker
    failures = failure_entries(summary.store)
    assert failures["b.mp4"]["stage"] == "write"
    assert failures["b.mp4"]["reason"] == "cannot write the part file: No space left on device"
    assert failures["c.mp4"]["stage"] == "preprocess"
    assert failures["c.mp4"]["reason"].startswith("unexpected ValueError: cannot resize")
    # Rows reach the part file as they come (one batch at a time), not all at the end.
    assert max(size for _, size in blocks) <= 2
    assert [size for key, size in blocks if key == "a.mp4"] == [2, 2]


def test_a_full_disk_at_the_failure_log_stops_the_run_in_one_line(tmp_path, monkeypatch):
    """Writing OUT.failures.jsonl on a full disk was a traceback: now one line naming it and
    its size; the videos committed so far stay, and a rerun (disk freed) finishes the run."""
    sources = stand_in_videos(tmp_path, {"a.mp4": "clip", "b.mp4": "text", "c.mp4": "clip"})
    store = tmp_path / "s.h5"
    write_bytes = Path.write_bytes

    def full(path: Path, data: bytes) -> int:
        if ".failures.jsonl." in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFull) as caught:
        extract_with_stand_ins(sources, store)
    log = failures_path(store)
    assert re.fullmatch(
        rf"the disk is full: writing {re.escape(str(log))} needs about \d+ bytes \(.* free\); "
        r"free some space there \(or write elsewhere\) and run the command again: work already "
        "saved is kept",
        str(caught.value),
    )
    assert not log.exists() and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    summary = extract_with_stand_ins(sources, store)
    assert summary.stored + summary.skipped == 2 and summary.failed == 1
    assert set(failure_entries(store)) == {"b.mp4"}


def test_ctrl_c_during_extraction_is_one_line_and_the_rerun_finishes(tmp_path, monkeypatch, caplog):
    """Ctrl-C printed an 80-line KeyboardInterrupt traceback and exited 1. Now: one line with
    the command that goes on, exit 130; the committed video stays and the rerun stores the rest."""
    from masn.extract.run import collection, runner
    from masn.pipeline.benchmarks.stand_ins import StandInNetworks
    from masn.pipeline.cli import main

    stand_in_videos(tmp_path, {"a.mp4": "clip", "b.mp4": "clip", "c.mp4": "clip"})
    monkeypatch.setattr(collection, "load_networks", lambda config, *_: StandInNetworks(config))
    done, ends = runner._Run._done, []

    def interrupted(run, item) -> None:
        ends.append(item.source.key)
        if len(ends) == 2:  # the second video has been decoded: Ctrl-C
            raise KeyboardInterrupt
        done(run, item)

    monkeypatch.setattr(runner._Run, "_done", interrupted)
    out = tmp_path / "s.h5"
    args = ["extract", "--videos", str(tmp_path / "videos"), "--out", str(out)]
    args += ["--random-weights", "--device", "cpu", "--workers", "0", "--batch-size", "1"]
    assert main(args) == 130
    (error,) = [record for record in caplog.records if record.levelname == "ERROR"]
    assert error.getMessage() == (
        f"interrupted; the work already saved is kept: to go on, run masn {shlex.join(args)}"
    )
    assert not error.exc_info
    committed = [p.name for p in Path(f"{out}.parts").glob("*.h5")]
    assert committed == ["a.mp4.h5"] and not out.exists()  # the video done before Ctrl-C
    monkeypatch.setattr(runner._Run, "_done", done)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert "1 of 3 videos are already in" in caplog.text
    with FeatureStore(out) as features:
        assert sorted(features) == ["a.mp4", "b.mp4", "c.mp4"]


def test_extraction_onto_a_damaged_store_rebuilds_it(tmp_path, monkeypatch, caplog):
    sources = stand_in_videos(tmp_path, {"a.mp4": "clip", "b.mp4": "clip", "c.mp4": "clip"})
    store = tmp_path / "s.h5"
    extract_with_stand_ins(sources[:2], store)
    with monkeypatch.context() as patch:  # c is committed as a part, never consolidated
        patch.setattr(StoreWriter, "consolidate", lambda writer: writer.path)
        extract_with_stand_ins(sources[2:], store)
    store.write_bytes(store.read_bytes()[:1000])  # cut short
    with pytest.raises(InvalidInput, match=r"s\.h5 is damaged"):
        FeatureStore(store)
    with caplog.at_level(logging.WARNING):
        summary = extract_with_stand_ins(sources, store)
    (aside,) = tmp_path.glob("s.h5.corrupt-*")
    assert aside.stat().st_size == 1000 and str(aside) in caplog.text
    assert (summary.skipped, summary.stored) == (1, 2)  # the part kept, a and b extracted again
    with FeatureStore(store) as features:
        assert sorted(features) == ["a.mp4", "b.mp4", "c.mp4"]
