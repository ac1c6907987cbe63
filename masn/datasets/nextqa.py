"""NExT-QA (Xiao et al., CVPR 2021), multiple choice: why and how, before and after, on VidOR
videos.

Question files ``{train,val,test}.csv`` are comma-separated with the header ``video,
frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4``; ``answer`` is the index of
the right one of the five candidates. A question's ``video`` is the VidOR id, the name of its
file ``NExTVideo/<folder>/<video>.mp4``. Types: causal (CW why, CH how), temporal (TN next, TC
current, TP previous) and descriptive (DC count, DL location, DO other), reported one by one
and by group, as the NExT-QA paper does. Videos run 44 s on average, so T = 30 sampled frames
are spread over the whole video. The published files repeat a candidate in a few questions;
they are kept as published.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

from masn.datasets.annotations import AnnotationError, QARow, read_text, shown
from masn.datasets.spec import SPLITS, Dataset, TaskSpec
from masn.datasets.video_keys import stem_matching, without_mapping

log = logging.getLogger(__name__)

HEADER = ("video", "frame_count", "width", "height", "question", "answer", "qid", "type")
HEADER += tuple(f"a{i}" for i in range(5))
TYPE_GROUPS = (
    ("causal", ("CW", "CH")),
    ("temporal", ("TN", "TC", "TP")),
    ("descriptive", ("DC", "DL", "DO")),
)
QUESTION_TYPES = tuple(qtype for _, types in TYPE_GROUPS for qtype in types)
_VIDEO = re.compile(r"[0-9]+")


def read_nextqa(path: str | Path) -> list[QARow]:
    """Rows of a NExT-QA multiple-choice file."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    rows: list[QARow] = []
    try:
        header = next(reader, None)
        if header is None:
            raise AnnotationError(f"{path}: empty file; expected the header {','.join(HEADER)}")
        if tuple(column.strip() for column in header) != HEADER:
            raise AnnotationError(
                f"{path}:1: expected the NExT-QA header {','.join(HEADER)}, found "
                f"{shown(','.join(header))}"
            )
        line = 2
        for fields in reader:
            if fields:
                rows.append(_row(f"{path}:{line}", fields))
            line = reader.line_num + 1
    except csv.Error as e:
        raise AnnotationError(f"{path}:{reader.line_num}: malformed CSV row: {e}") from None
    if not rows:
        raise AnnotationError(f"{path}: no questions after the header")
    log.debug("read %d rows from %s", len(rows), path)
    return rows


def _row(where: str, fields: list[str]) -> QARow:
    if len(fields) != len(HEADER):
        raise AnnotationError(
            f"{where}: expected {len(HEADER)} comma-separated fields, found {len(fields)}"
        )
    values = dict(zip(HEADER, (field.strip() for field in fields), strict=True))
    if not _VIDEO.fullmatch(values["video"]):
        raise AnnotationError(
            f"{where}: video must be a VidOR id (digits), found {shown(values['video'])!r}"
        )
    if not values["question"]:
        raise AnnotationError(f"{where}: empty question")
    candidates = tuple(values[f"a{i}"] for i in range(5))
    for i, candidate in enumerate(candidates):
        if not candidate:
            raise AnnotationError(f"{where}: empty candidate a{i}")
    if values["answer"] not in ("0", "1", "2", "3", "4"):
        raise AnnotationError(
            f"{where}: answer must be the index 0..4 of a candidate, found "
            f"{shown(values['answer'])!r}"
        )
    if values["type"] not in QUESTION_TYPES:
        raise AnnotationError(
            f"{where}: unknown question type {shown(values['type'])!r}; NExT-QA's are "
            f"{', '.join(QUESTION_TYPES)}"
        )
    return QARow(
        (values["video"],),
        values["question"],
        int(values["answer"]),
        candidates=candidates,
        qtype=values["type"],
        source=where,
    )


def split_files(spec: TaskSpec, folder: Path) -> dict[str, Path]:
    """train.csv, val.csv and test.csv."""
    return {split: folder / f"{split}.csv" for split in SPLITS}


DATASET = Dataset(
    name="nextqa",
    title="NExT-QA",
    tasks=(
        TaskSpec(
            "nextqa",
            "nextqa",
            "multiple_choice",
            frames=30,
            batch_size=16,
            sampling="uniform",
            qtypes=QUESTION_TYPES,
            type_groups=TYPE_GROUPS,
        ),
    ),
    annotations="data/nextqa",
    split_files=split_files,
    read=lambda spec, path: read_nextqa(path),
    keyer=without_mapping("nextqa", stem_matching(_VIDEO)),
    keyed="named by their VidOR id",
    video_extension=".mp4",
    links={
        "questions": "https://github.com/doc-doc/NExT-QA/tree/main/dataset/nextqa",
        "videos": "https://github.com/doc-doc/NExT-QA#data-preparation",
    },
)
