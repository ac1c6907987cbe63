"""Question readers of TGIF-QA, MSVD-QA / MSRVTT-QA and our JSONL: the real files, malformed
inputs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from masn.datasets.annotations import AnnotationError, QARow
from masn.datasets.folder import read_jsonl
from masn.datasets.msvd import MSQA_TYPES, question_type, read_msqa
from masn.datasets.tgif import FRAMEQA_TYPES, read_tgif

TGIF_FILES = {
    "Train_action": ("action", 20_471),
    "Test_action": ("action", 2_274),
    "Total_action": ("action", 22_749),
    "Train_count": ("count", 26_839),
    "Test_count": ("count", 3_554),
    "Total_count": ("count", 30_397),
    "Test_frameqa": ("frameqa", 13_691),
    "Test_transition": ("transition", 6_232),
}
MSVD_FILES = {"train": 30_933, "val": 6_415, "test": 13_157}

MC_HEADER = "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey\n"
COUNT_HEADER = "gif_name\tquestion\tanswer\tvid_id\tkey\n"
FRAMEQA_HEADER = "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription\n"
MC_ROW = (
    "tumblr_a\tWhat does he do 3 times ?\tjump\tnod\tsit\twave\trun\t{answer}\tACTION1\t{key}\n"
)


@pytest.fixture(scope="module")
def tgif(shared_dir: Path) -> dict[str, list[QARow]]:
    folder = shared_dir / "data" / "tgif-qa"
    return {
        name: read_tgif(folder / f"{name}_question.csv", task)
        for name, (task, _) in TGIF_FILES.items()
    }


@pytest.fixture(scope="module")
def msvd(shared_dir: Path) -> dict[str, list[QARow]]:
    folder = shared_dir / "data" / "msvd-qa"
    return {split: read_msqa(folder / f"{split}_qa.json", "vid") for split in MSVD_FILES}


# --- real files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TGIF_FILES)
def test_tgif_row_counts(tgif: dict[str, list[QARow]], name: str) -> None:
    assert len(tgif[name]) == TGIF_FILES[name][1]


def test_tgif_rows(tgif: dict[str, list[QARow]]) -> None:
    first = tgif["Test_action"][0]
    assert first.keys == ("tumblr_nk172bbdPI1u1lr18o1_250", "26")
    assert first.question == "What does the butterfly do 10 or more than 10 times ?"
    assert first.answer == 4 and first.candidates[4] == "flap wings"
    assert first.source.endswith("Test_action_question.csv:2")
    answers = Counter(row.answer for row in tgif["Test_action"])
    assert [answers[i] for i in range(5)] == [463, 448, 471, 446, 446]
    for name in ("Train_action", "Test_transition"):
        assert all(len(row.candidates) == 5 and row.qtype == "" for row in tgif[name])


def test_tgif_quoted_transition_row(tgif: dict[str, list[QARow]]) -> None:
    quoted = [row for row in tgif["Test_transition"] if 'respond "no"' in row.candidates]
    assert len(quoted) == 1
    assert quoted[0].candidates[4] == 'respond "no"'
    assert quoted[0].source.endswith("Test_transition_question.csv:1678")
    assert not any('""' in c for row in tgif["Test_transition"] for c in row.candidates)


def test_tgif_count_answers(tgif: dict[str, list[QARow]]) -> None:
    for name in ("Train_count", "Test_count", "Total_count"):
        answers = Counter(row.answer for row in tgif[name])
        assert set(answers) == {0, *range(2, 11)}, name  # 1 never occurs
    assert Counter(row.answer for row in tgif["Train_count"])[0] == 6_730


def test_tgif_frameqa(tgif: dict[str, list[QARow]]) -> None:
    rows = tgif["Test_frameqa"]
    counts = Counter(row.qtype for row in rows)
    assert counts == {"object": 5_586, "number": 3_148, "color": 3_904, "location": 1_053}
    assert rows[0].answer == "cookie" and rows[0].qtype == FRAMEQA_TYPES[0]
    assert rows[0].description == "a chocolate cookie is being placed in a white ice cream cone ."
    assert len({row.answer for row in rows}) == 933


@pytest.mark.parametrize("split", MSVD_FILES)
def test_msvd_row_counts(msvd: dict[str, list[QARow]], split: str) -> None:
    assert len(msvd[split]) == MSVD_FILES[split]


def test_msvd_rows(msvd: dict[str, list[QARow]]) -> None:
    train = msvd["train"]
    assert train[0] == QARow(
        keys=("vid1",),
        question="what is chewing on a nut?",
        answer="animal",
        qtype="what",
        source=train[0].source,
    )
    assert train[0].source.endswith("train_qa.json entry 0")  # the file is one line
    assert Counter(row.qtype for row in train) == {
        "what": 19_485,
        "who": 10_479,
        "how": 736,
        "when": 161,
        "where": 72,
    }
    assert train[-1].keys == ("vid1200",) and msvd["test"][-1].keys == ("vid1970",)


def test_question_type() -> None:
    assert question_type("what is chewing on a nut?") == "what"
    assert question_type("  Who opened the box?") == "who"
    assert question_type("whose car is it?") == "other"
    assert question_type("") == "other"
    assert set(MSQA_TYPES) == {"what", "who", "how", "when", "where"}


# --- malformed inputs -----------------------------------------------------------------------


def expect_error(path: Path, read: Callable[[Path], object], line: int, *words: str) -> str:
    """Reading path fails with a message naming the file, the line and each of words."""
    with pytest.raises(AnnotationError) as caught:
        read(path)
    message = str(caught.value)
    assert f"{path}:{line}:" in message, message
    for word in words:
        assert word in message, message
    return message


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def action(path: Path) -> object:
    return read_tgif(path, "action")


def test_tgif_wrong_header(tmp_path: Path) -> None:
    path = write(tmp_path, "count_as_action.csv", COUNT_HEADER + "g\tq?\t3\tCOUNT1\t5\n")
    expect_error(path, action, 1, "expected", "'a1'", "found", "header of a count file")
    path = write(tmp_path, "typo.csv", MC_HEADER.replace("key", "kee"))
    message = expect_error(path, lambda p: read_tgif(p, "transition"), 1, "'kee'")
    assert "file)" not in message  # matches no task's header, so no hint


def test_tgif_short_row(tmp_path: Path) -> None:
    text = MC_HEADER + MC_ROW.format(answer=0, key=5) + "tumblr_b\tWhat ?\tjump\t1\tACTION2\t6\n"
    expect_error(write(tmp_path, "short.csv", text), action, 3, "expected 10", "found 6")


def test_tgif_bad_values(tmp_path: Path) -> None:
    path = write(tmp_path, "key.csv", MC_HEADER + MC_ROW.format(answer=0, key="5a"))
    expect_error(path, action, 2, "key", "'5a'")
    path = write(
        tmp_path,
        "mc.csv",
        MC_HEADER + MC_ROW.format(answer=0, key=5) * 2 + MC_ROW.format(answer=7, key=5),
    )
    expect_error(path, action, 4, "answer", "0..4", "'7'")
    empty = MC_HEADER + MC_ROW.format(answer=0, key=5).replace("\tsit\t", "\t \t")
    expect_error(write(tmp_path, "empty.csv", empty), action, 2, "candidate a3")
    frameqa = FRAMEQA_HEADER + "g\twhat is it ?\tcat\t9\tFRAMEQA1\t5\ta cat .\n"
    path = write(tmp_path, "frameqa.csv", frameqa)
    expect_error(path, lambda p: read_tgif(p, "frameqa"), 2, "type", "0..3", "'9'")
    path = write(tmp_path, "count.csv", COUNT_HEADER + "g\tHow many ?\ttwo\tCOUNT1\t5\r\n")
    expect_error(path, lambda p: read_tgif(p, "count"), 2, "answer", "non-negative", "'two'")


def test_tgif_line_numbers_after_a_multiline_field(tmp_path: Path) -> None:
    spanning = MC_ROW.format(answer=1, key=5).replace("\tnod\t", '\t"nod\nslowly"\t')
    text = MC_HEADER + spanning + "\n" + MC_ROW.format(answer=9, key=6)
    path = write(tmp_path, "spanning.csv", text)
    expect_error(path, action, 5, "'9'")  # header 1, spanning row 2-3, blank 4
    unclosed = MC_ROW.format(answer=1, key=5).replace("\tnod\t", '\t"nod\t')
    path = write(tmp_path, "unclosed.csv", MC_HEADER + unclosed + MC_ROW.format(answer=0, key=6))
    expect_error(path, action, 2, "malformed CSV row")
    rows = read_tgif(write(tmp_path, "ok.csv", MC_HEADER + spanning), "action")
    assert rows[0].candidates[1] == "nod\nslowly"


def test_tgif_empty_files(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"empty\.csv: empty file"):
        action(write(tmp_path, "empty.csv", ""))
    with pytest.raises(AnnotationError, match=r"header\.csv: no data rows"):
        action(write(tmp_path, "header.csv", MC_HEADER))
    with pytest.raises(ValueError, match="unknown TGIF-QA task"):
        read_tgif(tmp_path / "header.csv", "trans")


def msvd_reader(path: Path) -> object:
    return read_msqa(path, "vid")


def test_msqa_errors(tmp_path: Path) -> None:
    good = {"answer": "cat", "id": 0, "question": "what is it?", "video_id": 3}
    missing = {key: value for key, value in good.items() if key != "video_id"}
    pretty = "[\n  " + ",\n  ".join(json.dumps(e) for e in (good, missing, good)) + "\n]\n"
    path = write(tmp_path, "missing.json", pretty)
    expect_error(path, msvd_reader, 3, "entry 1", "missing field 'video_id'")
    path = write(tmp_path, "bad.json", pretty.replace("},\n", "}\n", 1))
    expect_error(path, msvd_reader, 3, "invalid JSON", "delimiter")
    wrong = json.dumps([good, good, {**good, "id": "2"}])
    expect_error(write(tmp_path, "type.json", wrong), msvd_reader, 1, "entry 2", "'id'", "'2'")
    with pytest.raises(AnnotationError, match=r"object\.json: expected a JSON array"):
        msvd_reader(write(tmp_path, "object.json", json.dumps(good)))
    with pytest.raises(AnnotationError, match="no entries"):
        msvd_reader(write(tmp_path, "empty.json", " [ ]\n"))


def test_msrvtt_keys(tmp_path: Path) -> None:
    entries = [{"answer": "man", "id": 7, "question": "who sings?", "video_id": 0}]
    rows = read_msqa(write(tmp_path, "msrvtt.json", json.dumps(entries)), "video")
    assert rows == [QARow(("video0",), "who sings?", "man", qtype="who", source=rows[0].source)]


# --- JSONL ----------------------------------------------------------------------------------


def jsonl(tmp_path: Path, name: str, *lines: object) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    return write(tmp_path, name, text + "\n")


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        "open.jsonl",
        {
            "video": "clip1",
            "question": " what is he holding? ",
            "answer": "guitar ",
            "type": "what",
        },
        "",
        {"video": "clip2", "question": "who sings?", "answer": "man"},
    )
    assert read_jsonl(path) == [
        QARow(("clip1",), "what is he holding?", "guitar", qtype="what", source=f"{path}:1"),
        QARow(("clip2",), "who sings?", "man", source=f"{path}:3"),
    ]
    path = jsonl(tmp_path, "count.jsonl", {"video": "c", "question": "how many?", "answer": 0})
    assert read_jsonl(path) == [QARow(("c",), "how many?", 0, source=f"{path}:1")]
    choices = ["sit", "run", "jump"]
    path = jsonl(
        tmp_path,
        "mc.jsonl",
        {"video": "a", "question": "what does he do?", "candidates": choices, "answer": 2},
        {"video": "b", "question": "what next?", "candidates": choices, "answer": "run"},
    )
    rows = read_jsonl(path)
    assert [row.answer for row in rows] == [2, 1]
    assert all(row.candidates == tuple(choices) for row in rows)


def test_jsonl_errors(tmp_path: Path) -> None:
    good = {"video": "a", "question": "what?", "answer": "cat"}
    mc = {"video": "a", "question": "what?", "candidates": ["x", "y"], "answer": 0}
    path = jsonl(tmp_path, "typo.jsonl", good, {"video": "a", "question": "what?", "anwser": "x"})
    expect_error(path, read_jsonl, 2, "unknown field 'anwser'", "did you mean 'answer'")
    path = jsonl(tmp_path, "mixed.jsonl", mc, "", good)
    expect_error(path, read_jsonl, 3, "mixes multiple-choice and open-ended rows")
    path = jsonl(tmp_path, "kinds.jsonl", good, {**good, "answer": 2})
    expect_error(path, read_jsonl, 2, "mixes count and open-ended rows")
    path = jsonl(tmp_path, "choice.jsonl", mc, {**mc, "answer": "z"})
    expect_error(path, read_jsonl, 2, "'z'", "not one of the candidates")
    expect_error(jsonl(tmp_path, "index.jsonl", {**mc, "answer": 2}), read_jsonl, 1, "0..1")
    expect_error(jsonl(tmp_path, "bool.jsonl", {**good, "answer": True}), read_jsonl, 1, "True")
    path = jsonl(tmp_path, "comment.jsonl", good, "# a comment")
    expect_error(path, read_jsonl, 2, "comment")
    expect_error(jsonl(tmp_path, "json.jsonl", '{"video": "a",'), read_jsonl, 1, "invalid JSON")
    path = jsonl(tmp_path, "video.jsonl", {"question": "what?", "answer": "x"})
    expect_error(path, read_jsonl, 1, "missing field 'video'")
    path = jsonl(tmp_path, "one.jsonl", {**mc, "candidates": ["x"]})
    expect_error(path, read_jsonl, 1, "at least 2")
    with pytest.raises(AnnotationError, match=r"blank\.jsonl: no rows"):
        read_jsonl(write(tmp_path, "blank.jsonl", "\n\n"))


# --- numbers, encodings and candidate counts ------------------------------------------------


def test_jsonl_counts_must_be_small_integers(tmp_path: Path) -> None:
    count = {"video": "a", "question": "how many?", "answer": 3}
    big = '{"video": "a", "question": "how many?", "answer": %s}'
    cases = {
        "e40": (big % ("1" + "0" * 40), "41 digits"),
        "e400": (big % ("1" + "0" * 400), "401 digits"),
        "digits": (big % ("7" * 5000), "5000 digits"),
        "float": (big % "2.5", "2.5 (a float)"),
        "whole": (big % "3.0", "3.0 (a float)"),
        "negative": (big % "-1", "found -1"),
        "range": (big % "1001", "0..1000"),
        "overflow": (big % "1e400", "too large"),
        "nan": (big % "NaN", "NaN is not allowed"),
        "infinity": (big % "-Infinity", "-Infinity is not allowed"),
    }
    for name, (line, words) in cases.items():
        path = jsonl(tmp_path, f"{name}.jsonl", count, line)
        message = expect_error(path, read_jsonl, 2, words)
        assert len(message) < 200 and "\n" not in message, message
    assert read_jsonl(jsonl(tmp_path, "max.jsonl", {**count, "answer": 1000}))[0].answer == 1000
    mc = {"video": "a", "question": "what?", "candidates": ["x", "y"], "answer": 0}
    path = jsonl(tmp_path, "index.jsonl", mc, {**mc, "answer": 10**40})
    expect_error(path, read_jsonl, 2, "41 digits")
    path = jsonl(tmp_path, "nan_mc.jsonl", mc, {**mc, "answer": float("nan")})
    expect_error(path, read_jsonl, 2, "NaN")


def test_tgif_counts_and_keys_must_be_small_integers(tmp_path: Path) -> None:
    ok = "g\tHow many ?\t3\tCOUNT1\t5\n"
    for name, answer, words in [
        ("e40", "1" + "0" * 40, "0..1000"),
        ("digits", "7" * 5000, "(5000 characters)"),
        ("float", "2.5", "'2.5'"),
        ("negative", "-1", "'-1'"),
        ("nan", "nan", "'nan'"),
    ]:
        path = write(
            tmp_path, f"{name}.csv", COUNT_HEADER + ok + f"g\tHow many ?\t{answer}\tC\t5\n"
        )
        message = expect_error(path, lambda p: read_tgif(p, "count"), 3, "answer", words)
        assert len(message) < 200, message
    path = write(tmp_path, "key.csv", COUNT_HEADER + f"g\tHow many ?\t3\tCOUNT1\t{'9' * 5000}\n")
    expect_error(path, lambda p: read_tgif(p, "count"), 2, "key", "at most 19 digits")


def test_msqa_numbers_name_the_entry_line(tmp_path: Path) -> None:
    good = {"answer": "cat", "id": 0, "question": "what is it?", "video_id": 3}
    entries = [json.dumps(good), json.dumps(good).replace('"id": 0', '"id": ' + "5" * 5000)]
    path = write(tmp_path, "long.json", "[\n" + ",\n".join(entries) + "\n]\n")
    expect_error(path, msvd_reader, 3, "5000 digits")
    path = write(tmp_path, "nan.json", json.dumps([good, {**good, "answer": float("nan")}]))
    expect_error(path, msvd_reader, 1, "NaN is not allowed")
    with pytest.raises(AnnotationError, match=r"object\.json: expected a JSON array"):
        msvd_reader(write(tmp_path, "object.json", '{"id": %s}' % ("5" * 5000)))


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_non_utf8_files_name_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    good = json.dumps({"video": "a", "question": "what?", "answer": "cat"}).encode()
    latin = json.dumps({"video": "a", "question": "what?", "answer": "café"}, ensure_ascii=False)
    latin = latin.encode("latin-1")
    data = b"\xef\xbb\xbf" + good + b"\n\n" + good + b"\n" + latin + b"\n"
    path = write_bytes(tmp_path, "latin.jsonl", data)
    message = expect_error(path, read_jsonl, 4, "0xe9", "save the file as UTF-8")
    column = latin.index(b"\xe9") + 1
    assert f"{path}:4:{column}:" in message
    tsv = (
        COUNT_HEADER + "g\tHow many ?\t3\tC\t5\n" * 600
    ).encode() + b"g\tHow m\xffny ?\t3\tC\t5\n"
    path = write_bytes(tmp_path, "count.csv", tsv)
    expect_error(path, lambda p: read_tgif(p, "count"), 602, "0xff", "UTF-8")
    path = write_bytes(tmp_path, "msvd.json", b'[\n{"answer": "caf\xe9"}]')
    expect_error(path, msvd_reader, 2, "0xe9")


def test_jsonl_multiple_choice_rows_need_one_candidate_count(tmp_path: Path) -> None:
    mc = {"video": "a", "question": "what?", "candidates": ["x", "y", "z"], "answer": 0}
    path = jsonl(tmp_path, "mc.jsonl", mc, "", mc, {**mc, "candidates": ["x", "y"]}, mc)
    expect_error(path, read_jsonl, 4, "2 candidates", "first row (line 1) has 3")
