"""The Store view's reading: pages and searches read from the HDF5 index without the key list,
boxes with their labels, and a store file replaced or damaged under the app."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from masn.errors import InvalidInput, MissingInput, UnknownName
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import Provenance, VideoRecord
from masn.extract.store.store_file import DamagedStore, add_video, atomic_hdf5, init_store
from masn.pipeline.serve.catalogue import Catalogue, frame_boxes, media_type
from tests.builders import damage_store, random_record

COUNT = 1200


def tiny_store(path: Path, keys: list[str]) -> Path:
    """A store of ``keys`` with one sampled frame of width-4 features each (fast to write)."""
    rng = np.random.default_rng(0)
    provenance = Provenance.new({"fps": 6.0}, {"detector": "random (seed 0)"})
    with atomic_hdf5(path) as file:
        videos = init_store(file, provenance, "float16")
        for key in keys:
            record = random_record(key, 1, rng, objects=1, appearance=4, motion=4)
            record.path, record.width, record.height, record.duration = f"/x/{key}", 8, 6, 0.5
            add_video(videos, record, "float16")
    return path


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    keys = [f"clips/{i:05d}{'_cat' if i % 7 == 0 else ''}.mp4" for i in range(COUNT)]
    return tiny_store(tmp_path_factory.mktemp("many") / "many.h5", keys), keys


@pytest.fixture
def lazy(many, monkeypatch: pytest.MonkeyPatch) -> Catalogue:
    """The big store's catalogue, where reading the whole key list fails the test."""

    def whole(self):
        raise AssertionError("the video list was loaded whole")

    monkeypatch.setattr(FeatureStore, "keys", whole)
    monkeypatch.setattr(FeatureStore, "__iter__", whole)
    return Catalogue(many[0])


def test_pages_come_from_the_index_in_key_order_without_the_key_list(lazy, many):
    _, keys = many
    order = sorted(keys, key=lambda key: quote(key, safe=""))
    first = lazy.page("", 0, 50)
    assert [row.key for row in first.rows] == order[:50]
    assert first.total == COUNT and first.more and first.matches is None
    last = lazy.page("", COUNT // 50 - 1, 50)
    assert [row.key for row in last.rows] == order[-50:] and not last.more
    assert lazy.page("", 99, 50).rows == []
    row = first.rows[0]
    assert (row.frames, row.width, row.height, row.duration) == (1, 8, 6, 0.5)


def test_a_search_pages_through_its_matches_and_counts_them(lazy, many):
    _, keys = many
    cats = sorted(key for key in keys if "_CAT".casefold() in key)
    found = lazy.page("_CAT", 1, 50)
    assert found.matches == len(cats) == -(-COUNT // 7)
    assert [row.key for row in found.rows] == cats[50:100]
    assert found.more == (len(cats) > 100)
    assert lazy.page("nothing like it", 0, 50).rows == []


def test_a_late_page_costs_what_the_first_one_does(lazy):
    def seconds(page: int) -> float:
        started = time.perf_counter()
        for _ in range(5):
            lazy.page("", page, 50)
        return time.perf_counter() - started

    seconds(0)  # warm
    assert seconds(COUNT // 50 - 1) < 5 * seconds(0) + 0.05


def test_boxes_keep_their_labels_and_scores_and_skip_padding():
    boxes = np.array([[[1, 2, 30, 40], [0, 0, 0, 0]]], dtype=np.float32)
    record = VideoRecord(
        key="k",
        boxes=boxes,
        object_labels=np.array([[1, 0]]),
        attribute_labels=np.array([[2, 0]]),
        object_scores=np.array([[0.75, 0.0]]),
        attribute_scores=np.array([[0.5, 0.0]]),
    )
    (box,) = frame_boxes(record, 0)
    from masn.extract.networks.vocab import attribute_names, object_names

    assert (box.x1, box.y1, box.x2, box.y2) == (1, 2, 30, 40)
    assert box.label == f"{attribute_names()[2]} {object_names()[1]}"
    assert (box.score, box.attribute_score) == (0.75, 0.5)
    assert frame_boxes(VideoRecord(key="k"), 0) == []


def test_only_containers_a_browser_plays_get_a_media_type():
    assert media_type(Path("a/b.MP4")) == "video/mp4"
    assert media_type(Path("c.gif")) == "image/gif"
    assert media_type(Path("d.avi")) is None


def test_a_replaced_store_is_reopened_and_a_damaged_one_refused(tmp_path: Path):
    path = tiny_store(tmp_path / "store.h5", ["a.mp4", "b.mp4"])
    catalogue = Catalogue(path)
    assert catalogue.page("", 0, 10).total == 2 and not catalogue.notice
    tiny_store(tmp_path / "store.h5", ["a.mp4", "b.mp4", "c.mp4"])  # renamed into place
    assert catalogue.page("", 0, 10).total == 3
    assert "was replaced while the app was running" in catalogue.notice
    assert catalogue.read("c.mp4").key == "c.mp4"
    with pytest.raises(UnknownName, match=r"no video 'd\.mp4'"):
        catalogue.read("d.mp4")
    damage_store(path, "emptied")
    with pytest.raises(DamagedStore):
        catalogue.page("", 0, 10)
    path.unlink()
    with pytest.raises(MissingInput, match="is gone"):
        catalogue.store()
    with pytest.raises(MissingInput):
        Catalogue(tmp_path / "never.h5")


def test_a_frame_of_an_unreachable_video_is_a_message(tmp_path: Path):
    catalogue = Catalogue(tiny_store(tmp_path / "store.h5", ["a.mp4"]))
    assert catalogue.source(catalogue.read("a.mp4")) is None  # /x/a.mp4 does not exist
    with pytest.raises((MissingInput, InvalidInput), match="not reachable"):
        catalogue.frame_jpeg("a.mp4", 0)
