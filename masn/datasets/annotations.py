"""Question rows and what every annotation reader shares: reading text, decoding JSON, checking
numbers.

Every reader returns a list of :class:`QARow` and raises :class:`AnnotationError` (a
``ValueError``) on the first malformed file or row, naming ``path:line`` and the offending
value. Numbers are checked where they are read: a count is an integer 0..1000 (``COUNT_MAX``;
TGIF-QA's are 0..10); an integer literal longer than 19 digits, a float where an integer is
required, and ``NaN`` / ``Infinity`` (which Python's json module would accept) are errors.
Files must be UTF-8 (a byte-order mark is allowed); an undecodable byte is reported with its
line and column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from masn.errors import InvalidInput

if TYPE_CHECKING:
    from masn.model.config import Task

COUNT_MAX = 1000  # the largest count answer accepted (TGIF-QA's largest is 10)
# Longer integer literals are refused before Python converts them (int64 has 19 digits; Python
# itself refuses 4,300 digits with a message that cannot name the file).
MAX_DIGITS = 19
_SHOWN = 24  # characters of a refused value shown in a message
_SPACE = re.compile(r"[ \t\n\r]*")


class AnnotationError(InvalidInput):
    """A malformed annotation file or row; the message names file and line."""


class RefusedNumber(Exception):
    """A JSON number the decoder refuses; the reader adds ``path:line`` to the message."""


@dataclass(frozen=True)
class QARow:
    """One question with its answer and the video keys to look its features up by.

    answer: the text (open-ended), the count, or the index of the right candidate.
    source: where it was read (``path:line``), for messages and predictions.
    """

    keys: tuple[str, ...]
    question: str
    answer: str | int
    candidates: tuple[str, ...] = ()
    qtype: str = ""
    description: str = ""
    source: str = ""


def infer_head(rows: list[QARow]) -> Task:
    """The head rows call for: candidates (multiple choice), integer answers (count), or text."""
    if any(row.candidates for row in rows):
        return "multiple_choice"
    if rows and all(isinstance(row.answer, int) for row in rows):
        return "count"
    return "open_ended"


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


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise RefusedNumber(
            f"an integer of {digits} digits ({text[:12]}...) is too long: at most "
            f"{MAX_DIGITS} digits, and counts are 0..{COUNT_MAX}"
        )
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RefusedNumber(f"number {shown(text)} is too large for a float")
    return value


def _parse_constant(name: str) -> NoReturn:
    raise RefusedNumber(f"{name} is not allowed (JSON has no {name}); write a finite number")


JSON = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
)
"""json's decoder, minus what the JSON standard does not allow or Python cannot convert; it
raises :class:`RefusedNumber` for such numbers."""


def read_text(path: str | Path) -> str:
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


def json_array_entries(path: str | Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line, value) of each element of the JSON array that is the whole of ``text``."""
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
                value, end = JSON.raw_decode(text, pos)
            except json.JSONDecodeError:
                _raise_json_error(path, text, "invalid JSON")
            except RefusedNumber as e:
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
        JSON.decode(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except RefusedNumber:
        pass  # the fallback says what is wrong with the file as a whole
    raise AnnotationError(f"{path}: {fallback}")
