"""The failure log: a failed video is retried once by reruns, then skipped until asked."""

from __future__ import annotations

import json
import logging

from masn.extract.run.failure_log import FailureLog, failures_path
from masn.extract.video.sources import VideoSource
from tests.builders import extract_with_stand_ins, failure_entries, stand_in_videos, write_clip


def test_failed_videos_are_retried_once_then_skipped_until_asked(tmp_path, caplog):
    sources = stand_in_videos(tmp_path, {"good.mp4": "clip", "bad.mp4": "text"})
    store = tmp_path / "s.h5"
    for attempt in (1, 2):
        summary = extract_with_stand_ins(sources, store)
        assert (summary.failed, summary.given_up) == (1, 0)
        assert failure_entries(store)["bad.mp4"]["attempts"] == attempt
    with caplog.at_level(logging.WARNING):
        summary = extract_with_stand_ins(sources, store)
    assert (summary.failed, summary.given_up, summary.skipped) == (0, 1, 1)
    assert "skipping 1 videos that failed 2 times" in caplog.text
    assert "--retry-failed" in caplog.text
    assert failure_entries(store)["bad.mp4"]["attempts"] == 2
    assert extract_with_stand_ins(sources, store, retry_failed=True).failed == 1
    assert failure_entries(store)["bad.mp4"]["attempts"] == 3
    write_clip(sources[0].path, "libx264", 25, list(range(10)))  # the user fixes the file
    summary = extract_with_stand_ins(sources, store, retry_failed=True)
    assert (summary.stored, summary.failed) == (1, 0)
    assert not failures_path(store).exists()  # a stored video leaves the failure log


def test_one_entry_per_key_unreadable_lines_ignored_and_no_file_when_empty(tmp_path, caplog):
    path = tmp_path / "s.h5.failures.jsonl"
    path.write_text('{"key": "a.mp4", "attempts": 1}\nhalf a li\n{"no key": 1}\n')
    with caplog.at_level(logging.WARNING):
        log = FailureLog(path)
    assert "ignored 2 unreadable lines" in caplog.text
    assert log.attempts("a.mp4") == 1 and log.attempts("b.mp4") == 0
    source = VideoSource("a.mp4", tmp_path / "a.mp4")
    log.record(source, "decode", "empty file")
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["key"], e["attempts"], e["stage"]) for e in entries] == [("a.mp4", 2, "decode")]
    log.forget(["a.mp4"])
    assert not path.exists()
