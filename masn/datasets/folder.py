"""Your own collection: any folder of videos, keyed by their paths, and questions in JSONL.

Videos are keyed by their path relative to the videos folder (``masn extract --dataset
folder``). Questions: ``train.jsonl``, ``test.jsonl`` and optionally ``val.jsonl`` (otherwise a
seeded share of the training videos is held out), one JSON object per line, UTF-8; blank lines
are skipped, comment lines are not allowed (JSON has none). Fields:

- ``"video"`` (string, required): the key of the video in the feature store.
- ``"question"`` (string, required, non-empty).
- ``"answer"`` (required): a string for open-ended questions; a non-negative integer for
  counting questions; for multiple choice, the 0-based index of the right candidate or a string
  equal to one of the candidates.
- ``"candidates"`` (optional): the multiple-choice candidates, at least two distinct non-empty
  strings.
- ``"type"`` (optional string): the question type, reported separately.

The task's head comes from the rows unless ``--head`` says it: candidates make it multiple
choice, integer answers count, text open-ended.

Any other field is an error; all rows of one file are of one kind (multiple choice, count or
open-ended), and all multiple-choice rows of a file have as many candidates. For example::

    {"video": "clip001", "question": "what is he holding?", "answer": "guitar", "type": "what"}
    {"video": "clip002", "question": "how many times does he jump?", "answer": 3}
    {"video": "clip003", "question": "what does he do?", "candidates": ["sit", "run"], "answer": 1}
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any

from masn.datasets.annotations import (
    COUNT_MAX,
    JSON,
    AnnotationError,
    QARow,
    RefusedNumber,
    count_error,
    read_text,
)
from masn.datasets.spec import SPLITS, Dataset, TaskSpec
from masn.datasets.video_keys import escape_name, without_mapping

log = logging.getLogger(__name__)

FIELDS = ("video", "question", "answer", "candidates", "type")


def read_jsonl(path: str | Path) -> list[QARow]:
    """Rows of a JSONL question file in the format of this module's docstring."""
    rows: list[QARow] = []
    first_kind = ("", 0)
    first_choices = (0, 0)  # candidates of the first multiple-choice row, and its line
    for number, raw in enumerate(read_text(path).split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        where = f"{path}:{number}"
        row = _row(where, line)
        kind = row_kind(row)
        if not first_kind[0]:
            first_kind = (kind, number)
        elif kind != first_kind[0]:
            raise AnnotationError(
                f"{where}: the file mixes {' and '.join(sorted({kind, first_kind[0]}))} rows "
                f"(line {first_kind[1]} is {first_kind[0]}, this one is {kind})"
            )
        if row.candidates and not first_choices[0]:
            first_choices = (len(row.candidates), number)
        elif row.candidates and len(row.candidates) != first_choices[0]:
            raise AnnotationError(
                f"{where}: {len(row.candidates)} candidates, but the first row (line "
                f"{first_choices[1]}) has {first_choices[0]}; every multiple-choice question of "
                "a file needs the same number of candidates"
            )
        rows.append(row)
    if not rows:
        raise AnnotationError(f"{path}: no rows")
    log.debug("read %d rows from %s", len(rows), path)
    return rows


def row_kind(row: QARow) -> str:
    """multiple-choice, count or open-ended."""
    if row.candidates:
        return "multiple-choice"
    return "count" if isinstance(row.answer, int) else "open-ended"


def _row(where: str, line: str) -> QARow:
    if line.startswith("#"):
        raise AnnotationError(f"{where}: comment lines are not allowed (JSON has no comments)")
    try:
        entry = JSON.decode(line)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{where}:{e.colno}: invalid JSON: {e.msg}") from None
    except RefusedNumber as e:
        raise AnnotationError(f"{where}: {e}") from None
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: expected a JSON object, found {type(entry).__name__}")
    unknown = [field for field in entry if field not in FIELDS]
    if unknown:
        hints = [
            f"{field!r} (did you mean {close[0]!r}?)" if close else repr(field)
            for field in unknown
            for close in [difflib.get_close_matches(field, FIELDS, n=1)]
        ]
        raise AnnotationError(
            f"{where}: unknown field {', '.join(hints)}; allowed: {', '.join(FIELDS)}"
        )
    video = _text(where, entry, "video")
    question = _text(where, entry, "question")
    qtype = _text(where, entry, "type") if "type" in entry else ""
    if "answer" not in entry:
        raise AnnotationError(f"{where}: missing field 'answer'")
    answer = entry["answer"]
    candidates: tuple[str, ...] = ()
    if "candidates" in entry:
        candidates = _candidates(where, entry["candidates"])
        answer = _choice(where, answer, candidates)
    elif isinstance(answer, str) and answer.strip():
        answer = answer.strip()
    elif isinstance(answer, (int, float)) and not isinstance(answer, bool):
        problem = count_error(answer)
        if problem:
            raise AnnotationError(f"{where}: answer: {problem}")
    else:
        raise AnnotationError(
            f"{where}: answer must be a non-empty string or a count 0..{COUNT_MAX}, "
            f"found {answer!r}"
        )
    return QARow((video,), question, answer, candidates, qtype, source=where)


def _text(where: str, entry: dict[str, Any], field: str) -> str:
    if field not in entry:
        raise AnnotationError(f"{where}: missing field {field!r}")
    value = entry[field]
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(f"{where}: {field} must be a non-empty string, found {value!r}")
    return value.strip()


def _candidates(where: str, value: Any) -> tuple[str, ...]:
    if not (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(c, str) and c.strip() for c in value)
    ):
        raise AnnotationError(
            f"{where}: candidates must be a list of at least 2 non-empty strings, found {value!r}"
        )
    candidates = tuple(c.strip() for c in value)
    if len(set(candidates)) != len(candidates):
        raise AnnotationError(f"{where}: candidates repeat a value: {list(candidates)!r}")
    return candidates


def _choice(where: str, answer: Any, candidates: tuple[str, ...]) -> int:
    """The 0-based index of the correct candidate, given as an index or as the candidate."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(candidates):
            return answer
        raise AnnotationError(
            f"{where}: answer index {answer} is out of range 0..{len(candidates) - 1}"
        )
    if isinstance(answer, str):
        if answer.strip() in candidates:
            return candidates.index(answer.strip())
        raise AnnotationError(
            f"{where}: answer {answer!r} is not one of the candidates {list(candidates)!r}"
        )
    raise AnnotationError(
        f"{where}: answer must be a candidate index or a candidate string, found {answer!r}"
    )


def split_files(spec: TaskSpec, folder: Path) -> dict[str, Path]:
    """train.jsonl, test.jsonl, and val.jsonl where there is one."""
    files = {split: folder / f"{split}.jsonl" for split in SPLITS}
    if not files["val"].exists():
        del files["val"]
    return files


DATASET = Dataset(
    name="folder",
    title="your own collection",
    tasks=(TaskSpec("custom", "folder", None, frames=20, batch_size=32, from_rows=True),),
    annotations="data/custom",
    split_files=split_files,
    read=lambda spec, path: read_jsonl(path),
    keyer=without_mapping("folder", escape_name),
)
