"""The Ask form's body: streamed into a temporary folder, refused past a size limit.

A body that declares more than the limit is refused before a byte is read; one that streams
more (no or a false declared length) is refused as soon as it passes the limit, and the caller
deletes the request's folder with the partial file. The client's file name is never used as a
path: the file is ``upload`` plus the name's suffix when that is a plain one (``.mp4``), which
tells the decoder the container.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from masn.errors import InvalidInput

FIELDS_LIMIT = 256 * 1024  # bytes of form fields besides the file
MB = 1024 * 1024
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")


class UploadTooLarge(InvalidInput):
    """An upload over the size limit (nothing of it is kept)."""

    def __init__(self, limit: int, size: int | None = None):
        told = f" ({size / MB:,.0f} MB)" if size is not None else ""
        super().__init__(
            f"the upload is larger than the limit of {limit / MB:,.0f} MB{told}: upload a "
            "shorter clip, or restart masn serve with a larger --upload-mb"
        )


@dataclass
class Form:
    """The fields of a posted form (each name's values in order) and its uploaded file."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file: Path | None = None
    filename: str = ""  # the client's name for it, for display only
    size: int = 0

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default


def safe_suffix(filename: str) -> str:
    """The suffix of a client's file name when it is a plain one (letters and digits)."""
    suffix = Path(filename.replace("\\", "/")).suffix
    return suffix.lower() if _SUFFIX.fullmatch(suffix) else ""


def check_declared(content_length: str | None, limit: int) -> None:
    """Refuses a body whose declared length passes the limit (before reading any of it)."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise InvalidInput(f"unreadable Content-Length {content_length[:40]!r}") from None
    if declared > limit + FIELDS_LIMIT:
        raise UploadTooLarge(limit, declared)


async def read_form(
    content_type: str,
    content_length: str | None,
    body: AsyncIterator[bytes],
    folder: Path,
    limit: int,
) -> Form:
    """Reads a posted form, its file (at most ``limit`` bytes) written into ``folder``."""
    check_declared(content_length, limit)
    kind, options = parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded":
        data = bytearray()
        async for chunk in body:
            data += chunk
            if len(data) > FIELDS_LIMIT:
                raise InvalidInput(f"the form's fields exceed {FIELDS_LIMIT // 1024} KB")
        fields = parse_qs(data.decode("utf-8", "replace"), keep_blank_values=True)
        return Form(fields)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidInput("post the Ask form (multipart/form-data)")
    reader = _MultipartReader(folder, limit)
    parser = MultipartParser(options[b"boundary"], reader.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    finally:
        reader.close()
    return reader.form


class _MultipartReader:
    """python-multipart's callbacks: fields kept in memory, the file streamed to disk."""

    def __init__(self, folder: Path, limit: int):
        self.folder, self.limit = folder, limit
        self.form = Form()
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._name = ""
        self._value = bytearray()
        self._fields_size = 0
        self._file: BinaryIO | None = None
        self._is_file = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._add(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._add(1, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._header = {}, [b"", b""]
        self._name, self._value, self._is_file, self._file = "", bytearray(), False, None

    def _add(self, which: int, data: bytes) -> None:
        self._header[which] += data

    def _header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            return
        self._is_file = True
        filename = options[b"filename"].decode("utf-8", "replace")
        if not filename:
            return  # the form's file field left empty
        if self.form.file is not None:
            raise InvalidInput("upload one video at a time")
        self.form.filename = Path(filename.replace("\\", "/")).name[:200]
        self.form.file = self.folder / f"upload{safe_suffix(filename)}"
        self._file = self.form.file.open("xb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._is_file:
            if self._file is None:
                return
            self.form.size += size
            if self.form.size > self.limit:
                raise UploadTooLarge(self.limit)
            self._file.write(data[start:end])
            return
        self._fields_size += size
        if self._fields_size > FIELDS_LIMIT:
            raise InvalidInput(f"the form's fields exceed {FIELDS_LIMIT // 1024} KB")
        self._value += data[start:end]

    def _end(self) -> None:
        if self._is_file:
            self.close()
        else:
            value = self._value.decode("utf-8", "replace")
            self.form.fields.setdefault(self._name, []).append(value)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
