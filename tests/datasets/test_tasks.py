"""Datasets and their tasks: every table derives from the dataset modules; task specs, split
files, held-out validation videos, heads from rows, vocabulary texts."""

from __future__ import annotations

import typing
from collections import Counter

import numpy as np
import pytest

from masn.datasets import (
    DatasetName,
    OfficialDataset,
    PublishedTask,
    TaskName,
    all_tasks,
    dataset_names,
    get_dataset,
    official_task,
    task_spec,
)
from masn.datasets.annotations import QARow, infer_head
from masn.datasets.msvd import MSQA_TYPES
from masn.datasets.splits import load_splits, split_by_video, split_files
from masn.datasets.tgif import FRAMEQA_TYPES
from masn.pipeline.qa.resolve import default_features


@pytest.mark.parametrize(
    ("name", "head", "frames", "batch", "top", "dataset"),
    [
        ("count", "count", 20, 32, None, "tgif"),
        ("action", "multiple_choice", 20, 16, None, "tgif"),
        ("transition", "multiple_choice", 20, 16, None, "tgif"),
        ("frameqa", "open_ended", 20, 32, None, "tgif"),
        ("msvd", "open_ended", 30, 32, 1000, "msvd"),
        ("msrvtt", "open_ended", 30, 32, 4000, "msrvtt"),
        ("nextqa", "multiple_choice", 30, 16, None, "nextqa"),
        ("custom", None, 20, 32, None, "folder"),
    ],
)
def test_task_spec(name, head, frames, batch, top, dataset):
    spec = task_spec(name)
    assert (spec.name, spec.head, spec.frames, spec.batch_size) == (name, head, frames, batch)
    assert spec.answer_top == top and spec.dataset == dataset
    assert str(default_features(spec)) == f"features/{dataset}.h5"
    folders = {"tgif": "data/tgif-qa", "msvd": "data/msvd-qa", "msrvtt": "data/msrvtt-qa"}
    folders |= {"nextqa": "data/nextqa", "folder": "data/custom"}
    assert get_dataset(dataset).annotations == folders[dataset]
    assert spec.sampling == ("uniform" if name == "nextqa" else "first")


def test_task_spec_question_types_and_heads():
    assert set(all_tasks()) == {
        *("count", "action", "transition", "frameqa", "msvd", "msrvtt", "nextqa", "custom")
    }
    assert task_spec("frameqa").qtypes == FRAMEQA_TYPES
    assert task_spec("msvd").qtypes == (*MSQA_TYPES, "other")
    assert task_spec("count").qtypes == ()
    custom = task_spec("custom", head="multiple_choice")
    assert custom.head == "multiple_choice" and custom.from_rows
    assert task_spec("count", head="count").head == "count"
    with pytest.raises(ValueError, match="custom only"):
        task_spec("count", head="open_ended")
    with pytest.raises(KeyError, match="unknown task 'vqa'; choose from custom, "):
        task_spec("vqa")


def test_split_files(tmp_path):
    assert split_files(task_spec("count"), tmp_path) == {
        "train": tmp_path / "Train_count_question.csv",
        "test": tmp_path / "Test_count_question.csv",
    }
    assert split_files(task_spec("frameqa"), tmp_path)["test"].name == ("Test_frameqa_question.csv")
    assert split_files(task_spec("transition"), tmp_path)["train"].name == (
        "Train_transition_question.csv"
    )
    for name in ("msvd", "msrvtt"):
        files = split_files(task_spec(name), tmp_path)
        assert files == {s: tmp_path / f"{s}_qa.json" for s in ("train", "val", "test")}
    custom = task_spec("custom")
    assert split_files(custom, tmp_path) == {
        "train": tmp_path / "train.jsonl",
        "test": tmp_path / "test.jsonl",
    }
    (tmp_path / "val.jsonl").write_text("")
    assert split_files(custom, tmp_path)["val"] == tmp_path / "val.jsonl"
    assert split_files(task_spec("nextqa"), tmp_path) == {
        s: tmp_path / f"{s}.csv" for s in ("train", "val", "test")
    }


def _video_rows(videos: int, seed: int = 0) -> list[QARow]:
    """1-4 questions on each of ``videos`` TGIF-style videos (keys: gif name, integer key)."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(videos):
        for q in range(int(rng.integers(1, 5))):
            rows.append(QARow((f"tumblr_{v:03d}", str(1000 + v)), f"question {q}?", q))
    return rows


def test_split_by_video_keeps_videos_whole_and_is_seeded():
    rows = _video_rows(50)
    kept, held = split_by_video(rows, 0.1, seed=3)
    assert len(kept) + len(held) == len(rows)
    assert Counter(kept + held) == Counter(rows)
    kept_videos = {row.keys[0] for row in kept}
    held_videos = {row.keys[0] for row in held}
    assert not kept_videos & held_videos
    assert len(held_videos) == 5  # 10 % of 50 videos
    # Every question of a held-out video is held out; order within each side is preserved.
    assert held == [row for row in rows if row.keys[0] in held_videos]
    assert kept == [row for row in rows if row.keys[0] not in held_videos]

    again = split_by_video(rows, 0.1, seed=3)
    assert again == (kept, held)
    others = [{r.keys[0] for r in split_by_video(rows, 0.1, seed=s)[1]} for s in (4, 5, 6)]
    assert any(videos != held_videos for videos in others)


def test_split_by_video_edges():
    rows = _video_rows(3)
    kept, held = split_by_video(rows, 0.01, seed=0)  # at least one video held out
    assert len({r.keys[0] for r in held}) == 1
    kept, held = split_by_video(rows, 0.99, seed=0)  # and at least one kept
    assert len({r.keys[0] for r in kept}) == 1
    for fraction in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            split_by_video(rows, fraction, seed=0)
    one_video = [QARow(("v",), "q?", "a"), QARow(("v",), "r?", "b")]
    with pytest.raises(ValueError, match="at least 2 videos"):
        split_by_video(one_video, 0.1, seed=0)


def test_infer_head():
    mc = QARow(("v",), "what?", 1, candidates=("a", "b"))
    count = QARow(("v",), "how many?", 3)
    text = QARow(("v",), "what?", "dog")
    assert infer_head([text, mc]) == "multiple_choice"
    assert infer_head([count, count]) == "count"
    assert infer_head([count, text]) == "open_ended"
    assert infer_head([]) == "open_ended"


def test_load_splits_custom_without_val(tmp_path):
    lines = [
        f'{{"video": "clip{v}", "question": "what is {q}?", "answer": "x{q}"}}'
        for v in range(20)
        for q in range(2)
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.jsonl").write_text(lines[0] + "\n")
    splits = load_splits(task_spec("custom"), tmp_path, seed=0)
    assert list(splits) == ["train", "val", "test"]
    assert len(splits["val"]) == 4 and len(splits["train"]) == 36  # 2 of 20 videos, 2 each
    assert len(splits["test"]) == 1
    with pytest.raises(FileNotFoundError, match=r"no custom question file .*--annotations"):
        load_splits(task_spec("custom"), tmp_path / "absent", seed=0)


def test_vocabulary_texts():
    frameqa = QARow(("v", "1"), "what is red?", "car", qtype="color", description="a red car")
    mc = QARow(("v", "1"), "what does he do?", 0, candidates=("run", "sit"))
    assert task_spec("frameqa").vocabulary_texts(frameqa) == ["a red car", "what is red?", "car"]
    assert task_spec("action").vocabulary_texts(mc) == ["what does he do?", "run", "sit"]
    assert task_spec("msvd").vocabulary_texts(frameqa) == ["what is red?"]


def test_every_table_derives_from_the_dataset_modules():
    assert set(dataset_names()) == {"tgif", "msvd", "msrvtt", "nextqa", "folder"}
    assert typing.get_args(DatasetName) == dataset_names()
    assert typing.get_args(TaskName) == tuple(all_tasks())
    assert set(typing.get_args(OfficialDataset)) == {"tgif", "msvd", "msrvtt"}
    assert set(typing.get_args(PublishedTask)) == set(all_tasks()) - {"nextqa", "custom"}
    assert [spec.name for spec in official_task("MS-QA")] == ["msrvtt", "msvd"]
    assert official_task("Trans")[0].name == "transition"
    with pytest.raises(KeyError, match="unknown official task 'Counting'; known: Action"):
        official_task("Counting")
    for name, task in all_tasks().items():
        assert task in get_dataset(task.dataset).tasks and task.name == name


def test_published_results_are_the_papers():
    published = {
        name: (task.published.metric, task.published.value)
        for name, task in all_tasks().items()
        if task.published is not None
    }
    assert published == {
        "count": ("mse", 3.75),
        "action": ("accuracy", 84.4),
        "transition": ("accuracy", 87.4),
        "frameqa": ("accuracy", 59.5),
        "msvd": ("accuracy", 38.0),
        "msrvtt": ("accuracy", 35.2),
    }
