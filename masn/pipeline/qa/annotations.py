"""Readers of question-answer annotation files: TGIF-QA, MSVD-QA / MSRVTT-QA and our JSONL.

Every reader returns a list of :class:`QARow` and raises :class:`AnnotationError` (a
``ValueError``) on the first malformed file or row, with ``path:line`` and the offending value.

TGIF-QA files (``{Train,Test,Total}_{action,count,frameqa,transition}_question.csv``) are
tab-separated with one header row and CSV quoting. MSVD-QA and MSRVTT-QA files are one JSON array
of ``{"answer": str, "id": int, "question": str, "video_id": int}``.

JSONL, the format for your own collection: one JSON object per line, UTF-8. Blank lines are
skipped; comment lines are not allowed (JSON has none). Fields:

- ``"video"`` (string, required): the key of the video in the feature store.
- ``"question"`` (string, required, non-empty).
- ``"answer"`` (required): a string for open-ended questions; a non-negative integer for counting
  questions; for multiple choice, the 0-based index of the correct candidate or a string equal
  to one of the candidates.
- ``"candidates"`` (optional): the multiple-choice candidates, a list of at least two distinct
  non-empty strings.
- ``"type"`` (optional string): the question type (``QARow.qtype``), for per-type results.

Any other field is an error, all rows of one file must be of one kind (multiple choice,
count or open-ended), and all multiple-choice rows of one file need the same number of
candidates. For example::

    {"video": "clip001", "question": "what is he holding?", "answer": "guitar", "type": "what"}
    {"video": "clip002", "question": "how many times does he jump?", "answer": 3}
    {"video": "clip003", "question": "what does he do?", "candidates": ["sit", "run"], "answer": 1}

Numbers are checked where they are read, and every rejection names ``path:line``: a count is an
integer 0..1000 (``COUNT_MAX``; TGIF-QA's counts are 0..10), in every format; an integer
literal longer than 19 digits, a float where an integer is required, and ``NaN`` / ``Infinity``
(which Python's json module would accept) are errors. Files must be UTF-8 (a byte-order mark is
allowed); an undecodable byte is reported with the line it is on.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from masn.errors import InvalidInput

log = logging.getLogger(__name__)

FRAMEQA_TYPES = ("object", "number", "color", "location")
MSQA_TYPES = ("what", "who", "how", "when", "where")

_MC_HEADER = ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key")
_TGIF_HEADERS = {
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
    "action": _MC_HEADER,
    "transition": _MC_HEADER,
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key", "description"),
}
_MSQA_PREFIX = {"msvd": "vid", "msrvtt": "video"}
_MSQA_FIELDS = {"answer": str, "id": int, "question": str, "video_id": int}
_NAMES = {str: "a string", int: "an integer"}
_JSONL_FIELDS = ("video", "question", "answer", "candidates", "type")
_DIGITS = re.compile(r"[0-9]+")
_SPACE = re.compile(r"[ \t\n\r]*")
COUNT_MAX = 1000  # the largest count answer accepted (TGIF-QA's largest is 10)
# Longer integer literals are refused before Python converts them (int64 has 19 digits; Python
# itself refuses 4,300 digits with a message that cannot name the file).
_MAX_DIGITS = 19
_SHOWN = 24  # characters of a refused value shown in a message


class AnnotationError(InvalidInput):
    """A malformed annotation file or row; the message names file and line."""


class _RefusedNumber(Exception):
    """A JSON number the decoder hooks refuse; the reader adds ``path:line`` to the message."""


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > _MAX_DIGITS:
        raise _RefusedNumber(
            f"an integer of {digits} digits ({text[:12]}...) is too long: at most "
            f"{_MAX_DIGITS} digits, and counts are 0..{COUNT_MAX}"
        )
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _RefusedNumber(f"number {shown(text)} is too large for a float")
    return value


def _parse_constant(name: str) -> NoReturn:
    raise _RefusedNumber(f"{name} is not allowed (JSON has no {name}); write a finite number")


# json's decoder, minus what the JSON standard does not allow or Python cannot convert.
_DECODER = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
)


def shown(text: str) -> str:
    """``text`` for a one-line message: cut to a few characters, with its length when cut."""
    if len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... ({len(text)} characters)"


def count_error(value: object) -> str | None:
    """Why ``value`` is not a count answer (an integer 0..COUNT_MAX), or None when it is."""
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "a float" if isinstance(value, float) else type(value).__name__
        return f"a count must be an integer 0..{COUNT_MAX}, found {value!r} ({kind})"
    if not 0 <= value <= COUNT_MAX:
        text = str(value) if value.bit_length() < 64 else f"an integer of {value.bit_length()} bits"
        return f"a count must be an integer 0..{COUNT_MAX}, found {shown(text)}"
    return None


@dataclass(frozen=True)
class QARow:
    """One question with its answer and the video keys to look its features up by."""

    keys: tuple[str, ...]
    question: str
    answer: str | int
    candidates: tuple[str, ...] = ()
    qtype: str = ""
    description: str = ""
    source: str = ""


def question_type(question: str) -> str:
    """MSVD-QA / MSRVTT-QA question type: the first word if it is in MSQA_TYPES, else "other"."""
    words = question.split()
    first = words[0].lower() if words else ""
    return first if first in MSQA_TYPES else "other"


def read_tgif(path: str | Path, task: str) -> list[QARow]:
    """Rows of a TGIF-QA file; task is one of "count", "action", "transition", "frameqa"."""
    if task not in _TGIF_HEADERS:
        raise ValueError(f"unknown TGIF-QA task {task!r}; expected one of {sorted(_TGIF_HEADERS)}")
    expected = _TGIF_HEADERS[task]
    rows: list[QARow] = []
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t", strict=True)
    next_line = 1  # where the next row starts: quoted fields may span lines
    try:
        for fields in reader:
            line, next_line = next_line, reader.line_num + 1
            if line == 1:
                _check_tgif_header(path, task, tuple(fields))
            elif fields:  # a blank line reads as [] and is skipped, as pandas does
                rows.append(_tgif_row(f"{path}:{line}", task, fields))
    except csv.Error as e:
        raise AnnotationError(f"{path}:{next_line}: malformed CSV row: {e}") from None
    if next_line == 1:
        raise AnnotationError(f"{path}: empty file; expected the {task} header {list(expected)}")
    if not rows:
        raise AnnotationError(f"{path}: no data rows after the header")
    log.debug("read %d %s rows from %s", len(rows), task, path)
    return rows


def _check_tgif_header(path: str | Path, task: str, found: tuple[str, ...]) -> None:
    expected = _TGIF_HEADERS[task]
    if found == expected:
        return
    message = f"{path}:1: expected the TGIF-QA {task} header {list(expected)}, found {list(found)}"
    owners = [name for name, header in _TGIF_HEADERS.items() if header == found]
    if owners:
        message += f" (the header of a {' or '.join(owners)} file)"
    raise AnnotationError(message)


def _tgif_row(where: str, task: str, fields: list[str]) -> QARow:
    header = _TGIF_HEADERS[task]
    if len(fields) != len(header):
        raise AnnotationError(
            f"{where}: expected {len(header)} tab-separated fields, found {len(fields)}"
        )
    values = dict(zip(header, (v.strip() for v in fields), strict=True))
    for column in ("gif_name", "question"):
        if not values[column]:
            raise AnnotationError(f"{where}: empty {column}")
    keys = (values["gif_name"], str(_tgif_int(where, values, "key")))
    question = values["question"]
    if task == "count":
        return QARow(keys, question, _tgif_int(where, values, "answer", COUNT_MAX), source=where)
    if task == "frameqa":
        kind = _tgif_int(where, values, "type", len(FRAMEQA_TYPES) - 1)
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
    answer = _tgif_int(where, values, "answer", len(candidates) - 1)
    return QARow(keys, question, answer, candidates=candidates, source=where)


def _tgif_int(where: str, values: dict[str, str], column: str, high: int | None = None) -> int:
    """A column's non-negative integer value, at most high (and at most 19 digits)."""
    text = values[column]
    if _DIGITS.fullmatch(text) and len(text) <= _MAX_DIGITS and (high is None or int(text) <= high):
        return int(text)
    wanted = f"at most {_MAX_DIGITS} digits" if high is None else f"0..{high}"
    raise AnnotationError(
        f"{where}: {column} must be a non-negative integer ({wanted}), found {shown(text)!r}"
    )


def read_msqa(path: str | Path, dataset: str) -> list[QARow]:
    """Rows of an MSVD-QA or MSRVTT-QA JSON file; dataset is "msvd" or "msrvtt"."""
    if dataset not in _MSQA_PREFIX:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(_MSQA_PREFIX)}")
    text = _read_text(path)
    rows: list[QARow] = []
    for index, (line, entry) in enumerate(_array_entries(path, text)):
        where = f"{path}:{line}"
        if not isinstance(entry, dict):
            kind = type(entry).__name__
            raise AnnotationError(f"{where}: entry {index}: expected an object, found {kind}")
        for field, kind in _MSQA_FIELDS.items():
            if field not in entry:
                raise AnnotationError(f"{where}: entry {index}: missing field {field!r}")
            value = entry[field]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise AnnotationError(
                    f"{where}: entry {index}: field {field!r} must be {_NAMES[kind]}, "
                    f"found {value!r}"
                )
        question, answer = entry["question"].strip(), entry["answer"].strip()
        if not question or not answer:
            field = "question" if not question else "answer"
            raise AnnotationError(f"{where}: entry {index}: empty {field}")
        if entry["video_id"] < 0:
            raise AnnotationError(
                f"{where}: entry {index}: negative video_id {entry['video_id']!r}"
            )
        key = f"{_MSQA_PREFIX[dataset]}{entry['video_id']}"
        # Entries, not lines, name MSVD-QA / MSRVTT-QA questions: the files are one line long.
        source = f"{path} entry {index}"
        rows.append(QARow((key,), question, answer, qtype=question_type(question), source=source))
    if not rows:
        raise AnnotationError(f"{path}: the JSON array has no entries")
    log.debug("read %d %s rows from %s", len(rows), dataset, path)
    return rows


def _read_text(path: str | Path) -> str:
    """The file's text; a byte that is not UTF-8 is reported with its line and column."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        data = e.object  # the bytes after any byte-order mark, which e.start counts in
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise AnnotationError(
            f"{path}:{line}:{column}: byte 0x{data[e.start]:02x} is not UTF-8 text; save the "
            "file as UTF-8"
        ) from None


def _array_entries(path: str | Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line, value) of each element of the JSON array that is the whole of text."""
    pos = _SPACE.match(text).end()
    if text[pos : pos + 1] != "[":
        _raise_json_error(path, text, "expected a JSON array of objects")
    pos = _SPACE.match(text, pos + 1).end()
    line, counted = 1, 0
    if text[pos : pos + 1] == "]":
        pos += 1
    else:
        while True:
            line, counted = line + text.count("\n", counted, pos), pos
            try:
                value, end = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError:
                _raise_json_error(path, text, "invalid JSON")
            except _RefusedNumber as e:
                raise AnnotationError(f"{path}:{line}: {e}") from None
            yield line, value
            pos = _SPACE.match(text, end).end()
            if text[pos : pos + 1] != ",":
                break
            pos = _SPACE.match(text, pos + 1).end()
        if text[pos : pos + 1] != "]":
            _raise_json_error(path, text, "invalid JSON")
        pos += 1
    if _SPACE.match(text, pos).end() != len(text):
        _raise_json_error(path, text, "invalid JSON")


def _raise_json_error(path: str | Path, text: str, fallback: str) -> NoReturn:
    """Raise AnnotationError with json's own message, line and column for text."""
    try:
        _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except _RefusedNumber:
        pass  # the fallback says what is wrong with the file as a whole
    raise AnnotationError(f"{path}: {fallback}")


def read_jsonl(path: str | Path) -> list[QARow]:
    """Rows of a JSONL annotation file in the format of this module's docstring."""
    rows: list[QARow] = []
    first_kind = ("", 0)
    first_choices = (0, 0)  # candidates of the first multiple-choice row, and its line
    for number, raw in enumerate(_read_text(path).split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        where = f"{path}:{number}"
        row = _jsonl_row(where, line)
        kind = _row_kind(row)
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


def _row_kind(row: QARow) -> str:
    if row.candidates:
        return "multiple-choice"
    return "count" if isinstance(row.answer, int) else "open-ended"


def _jsonl_row(where: str, line: str) -> QARow:
    if line.startswith("#"):
        raise AnnotationError(f"{where}: comment lines are not allowed (JSON has no comments)")
    try:
        entry = _DECODER.decode(line)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{where}:{e.colno}: invalid JSON: {e.msg}") from None
    except _RefusedNumber as e:
        raise AnnotationError(f"{where}: {e}") from None
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: expected a JSON object, found {type(entry).__name__}")
    unknown = [field for field in entry if field not in _JSONL_FIELDS]
    if unknown:
        hints = [
            f"{field!r} (did you mean {close[0]!r}?)" if close else repr(field)
            for field in unknown
            for close in [difflib.get_close_matches(field, _JSONL_FIELDS, n=1)]
        ]
        raise AnnotationError(
            f"{where}: unknown field {', '.join(hints)}; allowed: {', '.join(_JSONL_FIELDS)}"
        )
    video = _jsonl_text(where, entry, "video")
    question = _jsonl_text(where, entry, "question")
    qtype = _jsonl_text(where, entry, "type") if "type" in entry else ""
    if "answer" not in entry:
        raise AnnotationError(f"{where}: missing field 'answer'")
    answer = entry["answer"]
    candidates: tuple[str, ...] = ()
    if "candidates" in entry:
        candidates = _jsonl_candidates(where, entry["candidates"])
        answer = _jsonl_choice(where, answer, candidates)
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


def _jsonl_text(where: str, entry: dict[str, Any], field: str) -> str:
    if field not in entry:
        raise AnnotationError(f"{where}: missing field {field!r}")
    value = entry[field]
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(f"{where}: {field} must be a non-empty string, found {value!r}")
    return value.strip()


def _jsonl_candidates(where: str, value: Any) -> tuple[str, ...]:
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


def _jsonl_choice(where: str, answer: Any, candidates: tuple[str, ...]) -> int:
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
