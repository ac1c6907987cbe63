"""NExT-QA: the published question files read as they are, videos keyed by VidOR id, and a run on
synthetic videos with the real questions, reported per question type and per group."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from masn.datasets.annotations import AnnotationError
from masn.datasets.nextqa import HEADER, QUESTION_TYPES, TYPE_GROUPS, read_nextqa
from masn.extract.video.sources import list_videos
from masn.pipeline.cli import main
from tests.builders import TINY_FLAGS, write_clip

ROW = "4010069381,369,640,480,how do the two man play the instrument,0,6,CH,a,b,c,d,e"


def test_the_published_files_read_as_they_are(shared_dir: Path):
    folder = shared_dir / "data" / "nextqa"
    val, test = read_nextqa(folder / "val.csv"), read_nextqa(folder / "test.csv")
    assert (len(val), len(test)) == (4996, 8564)
    assert len({row.keys[0] for row in val}) == 570 and len({row.keys[0] for row in test}) == 1000
    assert Counter(row.qtype for row in val) == {
        "CW": 1924, "TN": 895, "CH": 683, "TC": 663, "DO": 305, "DL": 295, "DC": 177, "TP": 54
    }  # fmt: skip
    first = val[0]
    assert first.keys == ("4010069381",) and first.answer == 0 and first.qtype == "CH"
    assert first.candidates[2] == "strum the string" and first.source.endswith("val.csv:2")
    assert all(len(row.candidates) == 5 and 0 <= row.answer < 5 for row in val + test)
    assert {t for _, types in TYPE_GROUPS for t in types} == set(QUESTION_TYPES)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (ROW.replace(",0,6,CH,", ",5,6,CH,"), "answer must be the index 0..4 of a candidate"),
        (ROW.replace(",CH,", ",XX,"), "unknown question type 'XX'"),
        (ROW.replace("4010069381", "vid1"), "video must be a VidOR id"),
        (ROW.replace(",e", ","), "empty candidate a4"),
        (ROW + ",f", "expected 13 comma-separated fields, found 14"),
    ],
)
def test_malformed_rows_are_refused_with_file_and_line(tmp_path: Path, line: str, problem: str):
    path = tmp_path / "val.csv"
    path.write_text(",".join(HEADER) + "\n" + ROW + "\n" + line + "\n")
    with pytest.raises(AnnotationError, match=rf"val\.csv:3: {problem}"):
        read_nextqa(path)
    path.write_text("video,question,answer\n" + ROW + "\n")
    with pytest.raises(AnnotationError, match=r"val\.csv:1: expected the NExT-QA header"):
        read_nextqa(path)


def test_videos_are_keyed_by_their_vidor_id(tmp_path: Path, caplog):
    for name in ("0000/4010069381.mp4", "1001/2435100235.mp4", "extra/notes.mp4", "x/1.avi"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    sources = list_videos(tmp_path, "nextqa")
    assert [(s.key, s.path.relative_to(tmp_path).as_posix()) for s in sources] == [
        ("2435100235", "1001/2435100235.mp4"),
        ("4010069381", "0000/4010069381.mp4"),
    ]
    assert "skipped 1 .mp4 files not named by their VidOR id" in caplog.text
    assert "skipped 1 video files that are not .mp4" in caplog.text


@pytest.mark.slow
def test_a_run_on_synthetic_videos_with_the_published_questions(shared_dir: Path, tmp_path):
    """Videos for two validation and one test VidOR ids, extracted with --dataset nextqa;
    MASN trains on the published validation questions (train.csv is not published here) and is
    evaluated on the test questions of its video, per type and per group."""
    published = shared_dir / "data" / "nextqa"
    questions = tmp_path / "questions"
    questions.mkdir()
    for split, source in (("train", "val"), ("val", "val"), ("test", "test")):
        shutil.copy(published / f"{source}.csv", questions / f"{split}.csv")
    ids = [read_nextqa(published / "val.csv")[i].keys[0] for i in (0, 1)]
    ids.append(read_nextqa(published / "test.csv")[0].keys[0])
    videos = tmp_path / "NExTVideo"
    for i, video in enumerate(ids):
        (videos / f"{i:04d}").mkdir(parents=True)
        write_clip(videos / f"{i:04d}" / f"{video}.mp4", "libx264", 12, list(range(i, i + 24)))
    store = tmp_path / "nextqa.h5"
    extract = ["extract", "--dataset", "nextqa", "--videos", str(videos), "--out", str(store)]
    assert (
        main([*extract, "--random-weights", *TINY_FLAGS, "--device", "cpu", "--workers", "0"]) == 0
    )

    run = tmp_path / "run"
    train = ["train", "--task", "nextqa", "--annotations", str(questions), "--features", str(store)]
    train += ["--out", str(run), "--glove", "random", "--hidden", "32", "--epochs", "1"]
    assert main([*train, "--device", "cpu", "--workers", "0", "--no-baseline"]) == 0
    report = json.loads((run / "report.json").read_text())
    test_rows = [row for row in read_nextqa(published / "test.csv") if row.keys[0] == ids[2]]
    assert report["test"]["questions"] == len(test_rows) and "paper" not in report
    per_type = report["test"]["per_type"]
    assert set(per_type) == {row.qtype for row in test_rows}
    groups = report["test"]["per_group"]
    assert set(groups) == {"causal", "temporal", "descriptive"}
    for group, types in TYPE_GROUPS:
        assert groups[group]["questions"] == sum(
            per_type.get(t, {}).get("questions", 0) for t in types
        )

    out = tmp_path / "evaluation"
    evaluate = ["evaluate", "--checkpoint", str(run / "best.pt"), "--out", str(out)]
    assert main([*evaluate, "--device", "cpu", "--workers", "0", "--no-baseline"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["masn"]["per_group"] == groups
