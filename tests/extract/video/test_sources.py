"""Listing a dataset's videos under the keys its QA annotations use."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from importlib import resources
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest

from masn.datasets.msvd import load_mapping
from masn.datasets.video_keys import escape_name
from masn.errors import InvalidInput, MissingInput
from masn.extract.video.sources import VideoSource, list_videos

MAPPING_SHA256 = "28ad09f8b345eab9722cfeb2e43fe011689c9a1bdb2a10eb75f3801cc24508d7"


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def keys(sources: list[VideoSource]) -> list[str]:
    return [source.key for source in sources]


def test_bundled_msvd_mapping_is_the_original_file():
    data = (resources.files("masn.datasets") / "data" / "msvd_youtube_mapping.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == MAPPING_SHA256
    mapping = load_mapping()
    assert len(mapping) == 1970
    assert mapping["-4wsuPCjDBc_5_15"] == "vid1"
    assert set(mapping.values()) == {f"vid{n}" for n in range(1, 1971)}


def test_bundled_mapping_matches_the_shared_copy(shared_dir: Path):
    shared = shared_dir / "data" / "msvd-qa" / "youtube_mapping.txt"
    bundled = resources.files("masn.datasets") / "data" / "msvd_youtube_mapping.txt"
    assert bundled.read_bytes() == shared.read_bytes()


def test_msvd_keys_come_from_the_mapping(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    touch(tmp_path, "-4wsuPCjDBc_5_15.avi", "-7KMZQEsJW4_205_208.avi", "unknown_1_2.avi")
    touch(tmp_path, "notes.txt", "-8y1Q0rA3n8_108_115.mp4")
    with caplog.at_level(logging.WARNING):
        sources = list_videos(tmp_path, "msvd")
    assert sources == [
        VideoSource("vid1", tmp_path / "-4wsuPCjDBc_5_15.avi"),
        VideoSource("vid2", tmp_path / "-7KMZQEsJW4_205_208.avi"),
    ]
    assert "skipped 1 .avi files not in the MSVD name mapping" in caplog.text
    assert "unknown_1_2.avi" in caplog.text
    assert "skipped 1 video files that are not .avi" in caplog.text


def test_msvd_with_a_custom_mapping(tmp_path: Path):
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("clipA_1_5 vid7\nclipB_0_3 vid3\n\n")
    videos = tmp_path / "videos"
    touch(videos, "clipA_1_5.AVI", "clipB_0_3.avi")
    assert keys(list_videos(videos, "msvd", mapping=mapping)) == ["vid3", "vid7"]


def test_malformed_mapping(tmp_path: Path):
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("clipA_1_5 vid7\nclipB_0_3\n")
    touch(tmp_path / "videos", "clipA_1_5.avi")
    with pytest.raises(ValueError, match="line 2"):
        list_videos(tmp_path / "videos", "msvd", mapping=mapping)
    mapping.write_text("clipA_1_5 vid7\nclipB_0_3 vid7\n")
    with pytest.raises(ValueError, match="twice"):
        load_mapping(mapping)


def test_msrvtt(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    touch(tmp_path, "TrainValVideo/video0.mp4", "TrainValVideo/video12.mp4")
    touch(tmp_path, "TestVideo/video7010.mp4", "TestVideo/trailer.mp4", "TestVideo/.video3.mp4")
    with caplog.at_level(logging.WARNING):
        sources = list_videos(tmp_path, "msrvtt")
    assert keys(sources) == ["video0", "video12", "video7010"]
    assert sources[2].path == tmp_path / "TestVideo" / "video7010.mp4"
    assert "TestVideo/trailer.mp4" in caplog.text


def test_tgif(tmp_path: Path):
    touch(tmp_path, "tumblr_nk172bbdPI1u1lr18o1_250.gif", "tumblr_abc_400.GIF", "readme.md")
    assert keys(list_videos(tmp_path, "tgif")) == [
        "tumblr_abc_400",
        "tumblr_nk172bbdPI1u1lr18o1_250",
    ]


def test_folder_keys_are_relative_posix_paths(tmp_path: Path):
    touch(tmp_path, "a.mp4", "b/c.MKV", "b/d/e.webm", "f.3gp", "g.ts", "notes.txt", "h.jpg")
    touch(tmp_path, ".hidden/x.mp4", "._a.mp4")
    assert keys(list_videos(tmp_path, "folder")) == [
        "a.mp4",
        "b/c.MKV",
        "b/d/e.webm",
        "f.3gp",
        "g.ts",
    ]


def test_folder_follows_symlinks_without_looping(tmp_path: Path):
    touch(tmp_path / "real", "clip.avi")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "real", root / "linked")
    os.symlink(root, root / "linked_back")
    assert keys(list_videos(root, "folder")) == ["linked/clip.avi"]


def test_duplicate_keys_are_an_error(tmp_path: Path):
    touch(tmp_path, "train/video1.mp4", "test/video1.mp4")
    with pytest.raises(ValueError, match=r"keep one file per key\): video1: "):
        list_videos(tmp_path, "msrvtt")


def test_missing_folder_and_unknown_dataset(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_videos(tmp_path / "nowhere", "folder")
    with pytest.raises(ValueError, match="folder, msrvtt, msvd, nextqa, tgif"):
        list_videos(tmp_path, "activitynet")
    with pytest.raises(ValueError, match="msvd only"):
        list_videos(tmp_path, "tgif", mapping=tmp_path / "mapping.txt")


def test_empty_listing_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        assert list_videos(tmp_path, "tgif") == []
    assert "no tgif videos" in caplog.text


def test_names_that_are_not_utf8_get_reversible_escaped_keys(tmp_path: Path):
    names = [b"caf\xe9 50%.mp4", b"sub\xff/\xc3\xa9t\xe9.gif", "été 100%.mp4".encode()]
    for name in names:
        path = os.path.join(os.fsencode(tmp_path), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    sources = list_videos(tmp_path, "folder")
    found = {source.key: source.path for source in sources}
    assert set(found) == {"caf%E9 50%25.mp4", "sub%FF/ét%E9.gif", "été 100%.mp4"}
    for key, path in found.items():
        key.encode("utf-8")  # HDF5 and JSON take it
        assert path.exists()
        if key != "été 100%.mp4":  # valid UTF-8 names keep their keys as they are
            assert unquote_to_bytes(key) == os.fsencode(path.relative_to(tmp_path))
    assert escape_name("plain 100%.mp4") == "plain 100%.mp4"
    assert keys(list_videos(tmp_path / "sub\udcff", "tgif")) == ["ét%E9"]


def test_unreadable_subfolders_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    touch(tmp_path, "ok/a.mp4", "locked/b.mp4", "also/locked/c.mp4", "d.mp4")
    scandir = os.scandir
    locked = {str(tmp_path / "locked"), str(tmp_path / "also" / "locked")}

    def refusing(path):  # what chmod 000 does to a non-root user
        if os.fspath(path) in locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with caplog.at_level(logging.WARNING):
        assert keys(list_videos(tmp_path, "folder")) == ["d.mp4", "ok/a.mp4"]
    assert "could not read 2 folder(s)" in caplog.text
    assert "also/locked (Permission denied)" in caplog.text and "locked (Permission" in caplog.text
    locked.add(str(tmp_path))
    with pytest.raises(InvalidInput, match="cannot read the videos folder"):
        list_videos(tmp_path, "folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod-000 folders")
def test_a_chmod_000_subfolder_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    touch(tmp_path, "ok.mp4", "private/secret.mp4")
    (tmp_path / "private").chmod(0)
    try:
        with caplog.at_level(logging.WARNING):
            assert keys(list_videos(tmp_path, "folder")) == ["ok.mp4"]
    finally:
        (tmp_path / "private").chmod(0o755)
    assert "could not read 1 folder(s)" in caplog.text and "private" in caplog.text


def test_a_videos_folder_that_is_not_one_says_what_it_is(tmp_path: Path) -> None:
    """A FIFO, a device or a looping link were all "does not exist or is not a folder"."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "file.mp4").write_bytes(b"x")
    for path, said in [
        (tmp_path / "absent", "does not exist"),
        (tmp_path / "fifo", "is not a folder: not a regular file but a named pipe (FIFO)"),
        (Path("/dev/null"), "is not a folder: not a regular file but a character device"),
        (tmp_path / "loop", "is not a folder: a symbolic link that loops"),
        (tmp_path / "file.mp4", "is a file, not a folder"),
    ]:
        with pytest.raises(MissingInput, match=re.escape(f"videos folder {path} {said}")):
            list_videos(path, "folder")
