"""TGIF-QA (Jang et al., CVPR 2017): questions on animated GIFs, four tasks.

Question files ``{Train,Test,Total}_{action,count,frameqa,transition}_question.csv`` are
tab-separated, with one header row and CSV quoting; a question names its GIF (``gif_name``,
our key) and the official integer ``key``. There is no validation file: a seeded 10 % of the
training videos is held out. FrameQA's answer classes are every answer of its Total file
(train + test), as in the official code; its vocabulary also reads the captions and answers.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from masn.datasets.annotations import (
    COUNT_MAX,
    MAX_DIGITS,
    AnnotationError,
    QARow,
    read_text,
    shown,
)
from masn.datasets.spec import Dataset, OfficialFiles, Published, TaskSpec
from masn.datasets.video_keys import escape_name, stem, without_mapping

if TYPE_CHECKING:
    from masn.model.config import Task

log = logging.getLogger(__name__)

FRAMEQA_TYPES = ("object", "number", "color", "location")
_MC_HEADER = ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key")
HEADERS = {
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
    "action": _MC_HEADER,
    "transition": _MC_HEADER,
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key", "description"),
}
_DIGITS = re.compile(r"[0-9]+")
FILE_SPLITS = ("train", "test")  # validation is split off the training videos


def read_tgif(path: str | Path, task: str) -> list[QARow]:
    """Rows of a TGIF-QA file; task is one of "count", "action", "transition", "frameqa"."""
    if task not in HEADERS:
        raise ValueError(f"unknown TGIF-QA task {task!r}; expected one of {sorted(HEADERS)}")
    expected = HEADERS[task]
    rows: list[QARow] = []
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t", strict=True)
    next_line = 1  # where the next row starts: quoted fields may span lines
    try:
        for fields in reader:
            line, next_line = next_line, reader.line_num + 1
            if line == 1:
                _check_header(path, task, tuple(fields))
            elif fields:  # a blank line reads as [] and is skipped, as pandas does
                rows.append(_row(f"{path}:{line}", task, fields))
    except csv.Error as e:
        raise AnnotationError(f"{path}:{next_line}: malformed CSV row: {e}") from None
    if next_line == 1:
        raise AnnotationError(f"{path}: empty file; expected the {task} header {list(expected)}")
    if not rows:
        raise AnnotationError(f"{path}: no data rows after the header")
    log.debug("read %d %s rows from %s", len(rows), task, path)
    return rows


def _check_header(path: str | Path, task: str, found: tuple[str, ...]) -> None:
    expected = HEADERS[task]
    if found == expected:
        return
    message = f"{path}:1: expected the TGIF-QA {task} header {list(expected)}, found {list(found)}"
    owners = [name for name, header in HEADERS.items() if header == found]
    if owners:
        message += f" (the header of a {' or '.join(owners)} file)"
    raise AnnotationError(message)


def _row(where: str, task: str, fields: list[str]) -> QARow:
    header = HEADERS[task]
    if len(fields) != len(header):
        raise AnnotationError(
            f"{where}: expected {len(header)} tab-separated fields, found {len(fields)}"
        )
    values = dict(zip(header, (v.strip() for v in fields), strict=True))
    for column in ("gif_name", "question"):
        if not values[column]:
            raise AnnotationError(f"{where}: empty {column}")
    keys = (values["gif_name"], str(_integer(where, values, "key")))
    question = values["question"]
    if task == "count":
        return QARow(keys, question, _integer(where, values, "answer", COUNT_MAX), source=where)
    if task == "frameqa":
        kind = _integer(where, values, "type", len(FRAMEQA_TYPES) - 1)
        if not values["answer"]:
            raise AnnotationError(f"{where}: empty answer")
        return QARow(
            keys,
            question,
            values["answer"],
            qtype=FRAMEQA_TYPES[kind],
            description=values["description"],
            source=where,
        )
    candidates = tuple(values[f"a{i}"] for i in range(1, 6))
    for i, candidate in enumerate(candidates, 1):
        if not candidate:
            raise AnnotationError(f"{where}: empty candidate a{i}")
    answer = _integer(where, values, "answer", len(candidates) - 1)
    return QARow(keys, question, answer, candidates=candidates, source=where)


def _integer(where: str, values: dict[str, str], column: str, high: int | None = None) -> int:
    """A column's non-negative integer value, at most high (and at most 19 digits)."""
    text = values[column]
    if _DIGITS.fullmatch(text) and len(text) <= MAX_DIGITS and (high is None or int(text) <= high):
        return int(text)
    wanted = f"at most {MAX_DIGITS} digits" if high is None else f"0..{high}"
    raise AnnotationError(
        f"{where}: {column} must be a non-negative integer ({wanted}), found {shown(text)!r}"
    )


def split_files(spec: TaskSpec, folder: Path) -> dict[str, Path]:
    """Train and test files (validation is split off the training videos)."""
    return {split: folder / f"{split.title()}_{spec.name}_question.csv" for split in FILE_SPLITS}


def read(spec: TaskSpec, path: Path) -> list[QARow]:
    return read_tgif(path, spec.name)


def frameqa_texts(row: QARow) -> list[str]:
    """FrameQA's vocabulary texts (the official choice): caption, question and answer."""
    return [row.description, row.question, str(row.answer)]


def frameqa_answers(spec: TaskSpec, folder: Path, rows: Mapping[str, Sequence[QARow]]) -> list[str]:
    """FrameQA's answer classes: every answer of the Total file (train + test, as the official
    code), or of the train and test files when the Total file is absent."""
    total = folder / f"Total_{spec.name}_question.csv"
    if total.is_file():
        return [str(row.answer) for row in read_tgif(total, spec.name)]
    log.info("%s absent: FrameQA answer classes from the train and test files", total)
    return [str(row.answer) for split in ("train", "val", "test") for row in rows[split]]


def _task(name: str, head: Task, batch_size: int, official: str, result: Published) -> TaskSpec:
    return TaskSpec(name, "tgif", head, 20, batch_size, official_name=official, published=result)


DATASET = Dataset(
    name="tgif",
    title="TGIF-QA",
    tasks=(
        _task("count", "count", 32, "Count", Published("mse", 3.75)),
        _task("action", "multiple_choice", 16, "Action", Published("accuracy", 84.4)),
        _task("transition", "multiple_choice", 16, "Trans", Published("accuracy", 87.4)),
        TaskSpec(
            "frameqa",
            "tgif",
            "open_ended",
            frames=20,
            batch_size=32,
            qtypes=FRAMEQA_TYPES,
            official_name="FrameQA",
            published=Published("accuracy", 59.5),
            vocabulary_texts=frameqa_texts,
            answer_pool=frameqa_answers,
        ),
    ),
    annotations="data/tgif-qa",
    split_files=split_files,
    read=read,
    keyer=without_mapping("tgif", lambda relative: escape_name(stem(relative))),
    video_extension=".gif",
    official=OfficialFiles(
        "res152_avgpool.hdf5",
        "tgif_i3d_hw7_perclip_avgpool.hdf5",
        "tgif_btup_f_obj10.hdf5",
        "tgif_i3d_roialign_hw7_perclip_avgpool_obj10.hdf5",
        key_pattern=r"\d+",
        keys="the integer `key` column of the TGIF-QA csv files",
        key_map_file="Train_count_question.csv",
        motion_objects_hint=(
            "the README / Google Drive name lacks '_obj10': rename the downloaded file"
        ),
    ),
    links={
        "questions": "https://github.com/YunseokJANG/tgif-qa/tree/master/dataset",
        "videos": "https://github.com/YunseokJANG/tgif-qa#download-tgif-qa",
    },
)
