"""The GloVe rows of one vocabulary, streamed from a GloVe text file or a zip holding one.

GloVe files are large (glove.42B.300d.txt: 1.9M words, 5 GB), and a vocabulary needs a few
thousand rows, so the file is read once, line by line, and only the rows of vocabulary words
are parsed and kept: memory is O(vocabulary), never O(file). The result is cached as ``.npy``
with a JSON sidecar (source size and mtime, vocabulary hash), so a changed source or a
changed vocabulary rebuilds it. Words absent from GloVe get rows from a seeded initialiser
(N(0, 1) by default, as in the official MASN code, which did not seed it).

Format: one ``word v1 ... vD`` line per word, single spaces, no header (a word2vec-style
``count dim`` first line is skipped). The dimension comes from the first valid line. Words
may contain spaces (glove.840B has a few): the last D fields are the vector. Lines with too
few fields, unparsable or non-finite numbers, or more than ``MAX_LINE_BYTES`` bytes are
counted, logged and skipped; only vocabulary lines have their numbers parsed.

:func:`check_glove_file` is the strict counterpart, run before a downloaded or hand-placed file
is trusted (``masn weights fetch`` / ``list``): it reads the whole file and refuses it unless it
holds at least one vector and every line has the first line's number of numbers, since the
tolerant loader would otherwise hide a truncated, damaged or mixed file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from masn import atomic, progress
from masn.errors import InvalidInput, MissingInput

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # a 300-d GloVe line has about 3 kB
CACHE_VERSION = 1
_SHOWN_MALFORMED = 5
_BOM = b"\xef\xbb\xbf"

# (generator, rows, dim) -> (rows, dim) array for the words GloVe lacks.
Initialiser = Callable[[np.random.Generator, int, int], np.ndarray]


def normal_init(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """N(0, 1) rows, like the official code's ``np.random.normal(0, 1, 300)``."""
    return rng.standard_normal((rows, dim), dtype=np.float32)


@dataclass(frozen=True)
class GloveRows:
    """One row per vocabulary word; ``found[i]`` tells whether row i came from GloVe."""

    vectors: np.ndarray  # (len(words), dim) float32
    found: np.ndarray  # (len(words),) bool
    words: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        """The vocabulary words absent from the GloVe file (their rows are initialised)."""
        return [w for w, hit in zip(self.words, self.found, strict=True) if not hit]


@dataclass(frozen=True)
class GloveFile:
    """What :func:`check_glove_file` found: the vector dimension and how many vectors."""

    dim: int
    vectors: int


@dataclass
class _Scan:
    """What one pass over the file produced: rows (NaN where missing) and counters."""

    rows: np.ndarray
    lines: int
    malformed: int


@dataclass
class _Rejects:
    """Counts skipped lines and logs the first few."""

    label: str
    count: int = 0

    def add(self, number: int, line: bytes, reason: str) -> None:
        self.count += 1
        if self.count <= _SHOWN_MALFORMED:
            text = line[:60].decode("utf-8", errors="replace")
            log.warning("%s line %d skipped: %s (%r...)", self.label, number, reason, text)


def load_glove_rows(
    path: str | Path,
    vocabulary: Sequence[str],
    cache: Path | None = None,
    dim: int | None = None,
    *,
    seed: int = 0,
    init: Initialiser = normal_init,
) -> GloveRows:
    """The GloVe vectors of ``vocabulary`` (in its order) from the text or zip file ``path``.

    ``cache``: an ``.npy`` path to reuse across runs (sidecar ``.json`` beside it). ``dim``:
    the expected dimension (an error if the file differs; also picks the member of a zip
    holding several). Missing words get ``init(np.random.default_rng(seed), n, dim)``.
    """
    source = Path(path)
    cache = Path(cache) if cache is not None else None
    words = tuple(vocabulary)
    if not words:
        raise InvalidInput("the vocabulary is empty")
    if not source.is_file():
        raise MissingInput(
            f"no GloVe file at {source}: run `masn weights fetch glove-42b-300d` or pass the "
            "path of a GloVe .txt or .zip file"
        )
    fingerprint = _fingerprint(source, words)
    rows = _read_cache(cache, fingerprint, len(words), dim) if cache is not None else None
    if rows is None:
        scan = _scan(source, words, dim)
        rows = scan.rows
        if cache is not None:
            meta = {"dim": rows.shape[1], "lines_read": scan.lines, "malformed": scan.malformed}
            _write_cache(cache, rows, {**fingerprint, **meta})
    found = ~np.isnan(rows[:, 0])
    vectors = rows.copy()
    absent = int((~found).sum())
    if absent:
        shape = (absent, rows.shape[1])
        filler = np.asarray(init(np.random.default_rng(seed), *shape))
        if filler.shape != shape:
            raise ValueError(f"init returned an array of shape {filler.shape}, expected {shape}")
        vectors[~found] = filler
    result = GloveRows(vectors, found, words)
    log.info(
        "GloVe %s: %d of %d vocabulary words found (%d-d)",
        source.name,
        len(words) - absent,
        len(words),
        rows.shape[1],
    )
    if absent:
        examples = ", ".join(repr(w) for w in result.missing[:10])
        name = getattr(init, "__name__", repr(init))
        log.info("%d missing (e.g. %s): rows from %s, seed %d", absent, examples, name, seed)
    return result


def _scan(source: Path, words: tuple[str, ...], dim: int | None) -> _Scan:
    """Streams ``source`` once and keeps the first row of every vocabulary word."""
    wanted: dict[bytes, list[int]] = {}
    for position, word in enumerate(words):
        wanted.setdefault(word.encode("utf-8"), []).append(position)
    rows: np.ndarray | None = None
    number = 0
    with _open_text(source, dim) as (stream, total, label), _progress(total, label) as bar:
        rejects = _Rejects(label)
        for number, line in enumerate(_lines(stream, bar), start=1):
            if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                rejects.add(number, line, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            text = _text(line, number)
            if not text:
                continue
            if rows is None:  # the first line fixes the dimension
                fields = text.split(b" ")
                if _is_header(fields, number):
                    log.info("%s: skipping the word2vec header %r", label, text.decode())
                    continue
                vector = _parse(fields[1:])
                if vector is None:
                    rejects.add(number, line, "not a word followed by numbers")
                    continue
                if dim is not None and vector.size != dim:
                    raise InvalidInput(
                        f"{label} holds {vector.size}-d vectors (line {number}), expected {dim}-d"
                    )
                dim = vector.size
                rows = np.full((len(words), dim), np.nan, dtype=np.float32)
                word = fields[0]
            else:
                spaces = text.count(b" ")
                if spaces < dim:
                    rejects.add(number, line, f"fewer than {dim} numbers")
                    continue
                word = text[: text.index(b" ")] if spaces == dim else text.rsplit(b" ", dim)[0]
                if word not in wanted:
                    continue
                vector = _parse(text[len(word) + 1 :].split(b" "))
                if vector is None:
                    rejects.add(number, line, "unparsable or non-finite numbers")
                    continue
            positions = wanted.pop(word, None)
            if positions is not None:
                rows[positions] = vector
                if not wanted:
                    break
    if rejects.count:
        log.warning("%s: %d malformed line(s) skipped", label, rejects.count)
    if rows is None:
        raise InvalidInput(f"{label} holds no word vectors: is it a GloVe text file?")
    return _Scan(rows, number, rejects.count)


def check_glove_file(path: str | Path, *, zipped: bool = False) -> GloveFile:
    """Reads the whole GloVe text file (or the one .txt of a zip) at ``path`` and checks that
    it is usable: at least one vector, and every line a word followed by as many numbers as
    the first. ``zipped``: the file must also be a zip archive (the published .zip format).

    Raises :class:`InvalidInput` naming the file and the first problem (a damaged zip fails
    its CRC check here, as the whole member is read).
    """
    source = Path(path)
    if not source.is_file():
        raise MissingInput(f"no GloVe file at {source}")
    if zipped and not zipfile.is_zipfile(source):
        raise InvalidInput(
            f"{source} is not a zip archive ({source.stat().st_size} bytes): truncated or "
            "another file; download it again"
        )
    dim, first, vectors = 0, 0, 0
    with _open_text(source, None) as (stream, total, label), _progress(total, label) as bar:
        for number, line in enumerate(_lines(stream, bar), start=1):
            if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                raise InvalidInput(
                    f"{label} line {number} is longer than {MAX_LINE_BYTES} bytes: not a GloVe "
                    "text file; download it again"
                )
            text = _text(line, number)
            if not text:
                continue
            if not dim:
                fields = text.split(b" ")
                if _is_header(fields, number):
                    continue
                vector = _parse(fields[1:])
                if vector is None:
                    raise InvalidInput(
                        f"{label} line {number} is not a word followed by numbers: not a GloVe "
                        "text file; download it again"
                    )
                dim, first = vector.size, number
            elif not _holds_vector(text, dim):
                raise InvalidInput(
                    f"{label} line {number} does not hold {dim} numbers as line {first} does: "
                    "vectors of mixed dimensions (a damaged file?); download it again"
                )
            vectors += 1
    if not dim:
        raise InvalidInput(f"{label} holds no word vectors: is it a GloVe text file?")
    return GloveFile(dim, vectors)


def _text(line: bytes, number: int) -> bytes:
    """A line without its end (and, on line 1, without a UTF-8 byte order mark)."""
    return line.removeprefix(_BOM).rstrip() if number == 1 else line.rstrip()


def _is_header(fields: list[bytes], number: int) -> bool:
    """A word2vec-style ``count dim`` first line."""
    return number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields)


def _holds_vector(text: bytes, dim: int) -> bool:
    """Whether a line is a word and exactly ``dim`` numbers. Words may contain spaces, but
    a number just before the last ``dim`` fields means the line has more than ``dim``."""
    spaces = text.count(b" ")
    if spaces <= dim:
        return spaces == dim
    word = text.rsplit(b" ", dim)[0]
    try:
        float(word.rsplit(b" ", 1)[-1])
    except ValueError:
        return True
    return False


def _lines(stream: IO[bytes], bar: tqdm) -> Iterator[bytes]:
    """The lines of ``stream``; a line longer than ``MAX_LINE_BYTES`` is cut there and the
    rest of it skipped, so no line is ever held whole."""
    while line := stream.readline(MAX_LINE_BYTES):
        bar.update(len(line))
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                bar.update(len(rest))
            bar.update(len(rest))
        yield line


def _parse(fields: list[bytes]) -> np.ndarray | None:
    """The float32 vector of ``fields``; None if empty, unparsable or not finite."""
    if not fields:
        return None
    try:
        vector = np.array([float(f) for f in fields], dtype=np.float32)
    except ValueError:
        return None
    return vector if np.isfinite(vector).all() else None


@contextlib.contextmanager
def _open_text(source: Path, dim: int | None) -> Iterator[tuple[IO[bytes], int, str]]:
    """The binary line stream of a GloVe text file or of the GloVe member of a zip."""
    if not zipfile.is_zipfile(source):
        with open(source, "rb") as stream:
            yield stream, source.stat().st_size, source.name
        return
    try:
        with zipfile.ZipFile(source) as archive:
            member = _pick_member(archive, source, dim)
            # ZipExtFile.readline is slow; a large BufferedReader on top halves the read time.
            with io.BufferedReader(archive.open(member), buffer_size=1 << 18) as stream:
                yield stream, member.file_size, f"{source.name}:{member.filename}"
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # also raised while reading
        raise InvalidInput(
            f"{source} is a damaged zip archive ({error}); download it again"
        ) from None


def _pick_member(archive: zipfile.ZipFile, source: Path, dim: int | None) -> zipfile.ZipInfo:
    """The zip's GloVe text: its only .txt file, or the one named ``*.<dim>d.txt``."""
    texts = [m for m in archive.infolist() if m.filename.endswith(".txt") and not m.is_dir()]
    if len(texts) > 1 and dim is not None:
        texts = [m for m in texts if m.filename.endswith(f".{dim}d.txt")]
    if len(texts) == 1:
        return texts[0]
    names = ", ".join(m.filename for m in archive.infolist()) or "nothing"
    choose = len(texts) > 1 and dim is None
    raise InvalidInput(
        f"{source} holds {names}: expected exactly one GloVe .txt file"
        + ("; pass the dimension (dim=...) to choose one" if choose else "")
    )


def _progress(total: int, label: str) -> tqdm:
    return progress.bar(
        total=total, desc=f"GloVe {label}", unit="B", unit_scale=True, miniters=1 << 14
    )


def _fingerprint(source: Path, words: tuple[str, ...]) -> dict[str, object]:
    """What the cached rows depend on: the source file's identity and the vocabulary."""
    stat = source.stat()
    vocabulary = json.dumps(words, ensure_ascii=False).encode("utf-8")
    return {
        "version": CACHE_VERSION,
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "vocabulary_sha256": hashlib.sha256(vocabulary).hexdigest(),
        "vocabulary_size": len(words),
        "source": str(source.resolve()),
    }


def _sidecar(cache: Path) -> Path:
    return cache.with_suffix(".json")


def _read_cache(
    cache: Path, fingerprint: dict[str, object], size: int, dim: int | None
) -> np.ndarray | None:
    """The cached rows if they were made from this source and vocabulary, else None."""
    try:
        meta = json.loads(_sidecar(cache).read_text(encoding="utf-8"))
        rows = np.load(cache, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable GloVe cache %s (%s)", cache, exc)
        return None
    keys = ("version", "source_size", "source_mtime_ns", "vocabulary_sha256", "vocabulary_size")
    stale = [k for k in keys if meta.get(k) != fingerprint[k]]
    if dim is not None and meta.get("dim") != dim:
        stale.append("dim")
    if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape != (size, meta.get("dim")):
        stale.append("shape")
    if stale:
        log.info("GloVe cache %s is out of date (%s); rebuilding it", cache, ", ".join(stale))
        return None
    log.info("GloVe rows from the cache %s", cache)
    return rows


def _write_cache(cache: Path, rows: np.ndarray, meta: dict[str, object]) -> None:
    """Writes rows then sidecar, each atomically; the old sidecar goes first so that a crash
    in between never pairs new rows with a stale description."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    _sidecar(cache).unlink(missing_ok=True)
    with atomic.replacing(cache) as temporary, open(temporary, "wb") as stream:
        np.save(stream, rows, allow_pickle=False)
    atomic.write_text(_sidecar(cache), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    log.info("GloVe rows cached in %s", cache)
