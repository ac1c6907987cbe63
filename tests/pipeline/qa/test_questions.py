"""Pipeline data: tokenisers, vocabulary, answer classes, tasks and splits, question encoding,
features attached from our store or the official layout, datasets and batches (samplers and
the loader: test_loading.py)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from masn.datasets import task_spec
from masn.datasets.annotations import QARow
from masn.datasets.spec import TaskSpec
from masn.datasets.splits import load_splits, read_split
from masn.datasets.tgif import read_tgif
from masn.errors import InvalidInput
from masn.extract.store.official_reader import OfficialFeatures, open_features
from masn.extract.store.official_transfer import export_official
from masn.extract.store.reader import FeatureStore
from masn.pipeline.qa.answer_set import OUT_OF_SET, REFERENCE_CLASS, AnswerSet
from masn.pipeline.qa.loading import StepSampler
from masn.pipeline.qa.prepare import answer_classes
from masn.pipeline.qa.questions import (
    VIDEO_FIELDS,
    Batch,
    Collate,
    QADataset,
    attach_features,
    candidate_texts,
    encode_question,
    encode_questions,
    frame_indices,
)
from masn.pipeline.qa.text import (
    PAD,
    PLACEHOLDERS,
    QUESTION_WIDTH,
    UNK,
    Vocabulary,
    clean_tokens,
    official_tokens,
    tokeniser,
)
from tests.builders import random_record, write_store

# --------------------------------------------------------------------------- tokenisers


def test_official_tokens_escape_question_mark():
    assert official_tokens("What is the door?") == ["what", "is", "the", "door", "\\?"]
    assert clean_tokens("What is the door?") == ["what", "is", "the", "door", "?"]
    assert official_tokens("door?") == ["door", "\\?"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("isn't", ["is", "n't"]),
        ("the man's hat", ["the", "man", "'s", "hat"]),
        ("they've we're he'd you'll", ["they", "'ve", "we", "'re", "he", "'d", "you", "'ll"]),
        ("a 3.5-inch well-known pipe.", ["a", "3", "5", "inch", "well", "known", "pipe"]),
        ("yes, no!", ["yes", ",", "no", "!"]),
        ("WHAT Does The MAN Hold", ["what", "does", "the", "man", "hold"]),
        ("tabs\tand\nnew lines", ["tabs", "and", "new", "lines"]),
        ('"quoted" & #tagged; a/b', ["quoted", "tagged", "a", "b"]),
        ("snake_case word", ["snake_case", "word"]),  # the official regex keeps underscores
        ("", []),
        ("  ...  ", []),
    ],
)
def test_clean_tokens(text, expected):
    assert clean_tokens(text) == expected
    assert official_tokens(text) == expected  # nothing here is escaped


def test_parentheses():
    text = "what (if any) is he holding?"
    assert clean_tokens(text) == ["what", "(", "if", "any", ")", "is", "he", "holding", "?"]
    assert official_tokens(text) == [
        "what", "\\(", "if", "any", "\\)", "is", "he", "holding", "\\?"
    ]  # fmt: skip


def test_clitics_match_case_sensitively_like_the_official_code():
    # The official regexes run before lower-casing, so an upper-case clitic stays attached.
    assert clean_tokens("ISN'T") == ["isn't"]
    assert clean_tokens("Isn't") == ["is", "n't"]


def test_tokeniser_lookup():
    assert tokeniser("clean") is clean_tokens
    assert tokeniser("official") is official_tokens
    with pytest.raises(ValueError, match="unknown tokeniser 'nltk'"):
        tokeniser("nltk")


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_ids_and_order():
    vocabulary = Vocabulary.build(["What is it?", "Is it red?", "red red"], clean_tokens)
    assert vocabulary.words == ("#START#", "UNK", "what", "is", "it", "?", "red")
    assert vocabulary.words[PAD] == "#START#" and vocabulary.words[UNK] == "UNK"
    assert len(vocabulary) == 7
    assert vocabulary.ids(["red", "what", "blue", "UNK"]) == [6, 2, UNK, UNK]


def test_vocabulary_encode_pads_truncates_and_never_empty():
    vocabulary = Vocabulary.build(["a b c"], clean_tokens)
    row, length = vocabulary.encode(["a", "x", "c"])
    assert row.dtype == np.int64 and row.shape == (QUESTION_WIDTH,)
    assert length == 3
    assert row.tolist() == [2, UNK, 4] + [PAD] * (QUESTION_WIDTH - 3)

    long = ["a", "b", "c"] * 10  # 30 tokens
    row, length = vocabulary.encode(long)
    assert length == QUESTION_WIDTH
    assert row.tolist() == vocabulary.ids(long[:QUESTION_WIDTH])

    row, length = vocabulary.encode([])
    assert length == 1
    assert row.tolist() == [UNK] + [PAD] * (QUESTION_WIDTH - 1)

    row, length = vocabulary.encode(["b", "c"], width=4)
    assert row.tolist() == [3, 4, 0, 0] and length == 2


def test_vocabulary_needs_placeholders():
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary(("a", "b", "c"))
    with pytest.raises(ValueError):
        Vocabulary(("UNK", "#START#"))
    assert Vocabulary(PLACEHOLDERS).words == PLACEHOLDERS


# --------------------------------------------------------------------------- answers


def test_most_frequent_orders_by_count_then_first_occurrence():
    answers = ["b", "a", "c", "a", "b", "d", "e", "e", "e"]
    assert AnswerSet.most_frequent(answers).answers == ("e", "b", "a", "c", "d")
    assert AnswerSet.most_frequent(answers, top=3).answers == ("e", "b", "a")
    assert AnswerSet.most_frequent(iter(answers), top=100).answers == ("e", "b", "a", "c", "d")


def test_answer_targets_under_both_policies():
    classes = AnswerSet(("dog", "cat", "red"))
    assert len(classes) == 3
    assert classes.index("cat") == 1 and classes.index("fish") is None
    for policy in ("wrong", "reference"):
        assert classes.target("dog", policy) == 0
        assert classes.target("red", policy) == 2
    assert classes.target("fish", "wrong") == OUT_OF_SET == -1
    assert classes.target("fish", "reference") == REFERENCE_CLASS == 1


def test_answer_set_validation():
    with pytest.raises(ValueError, match="duplicate"):
        AnswerSet(("a", "b", "a"))
    with pytest.raises(ValueError, match="at least 2"):
        AnswerSet(("a",))
    with pytest.raises(ValueError, match="at least 2"):
        AnswerSet.most_frequent(["a", "a", "a"])


# --------------------------------------------------------------------------- real annotations


def texts(spec: TaskSpec, rows: list[QARow]) -> list[str]:
    """What the vocabulary of ``spec`` is built from."""
    return [text for row in rows for text in spec.vocabulary_texts(row)]


@pytest.fixture(scope="module")
def msvd_rows(shared_dir: Path) -> dict[str, list[QARow]]:
    return load_splits(task_spec("msvd"), shared_dir / "data" / "msvd-qa", seed=0)


@pytest.fixture(scope="module")
def count_rows(shared_dir: Path) -> dict[str, list[QARow]]:
    return load_splits(task_spec("count"), shared_dir / "data" / "tgif-qa", seed=0)


def test_msvd_split_sizes(msvd_rows):
    assert {split: len(rows) for split, rows in msvd_rows.items()} == {
        "train": 30_933,
        "val": 6_415,
        "test": 13_157,
    }


def test_tgif_count_splits(count_rows, shared_dir):
    assert len(count_rows["train"]) + len(count_rows["val"]) == 26_839
    assert len(count_rows["test"]) == 3_554
    train = {row.keys[0] for row in count_rows["train"]}
    val = {row.keys[0] for row in count_rows["val"]}
    assert not train & val
    assert len(val) / (len(train) + len(val)) == pytest.approx(0.1, abs=0.001)
    assert 0.08 < len(count_rows["val"]) / 26_839 < 0.12
    again = load_splits(task_spec("count"), shared_dir / "data" / "tgif-qa", seed=0)
    assert again["val"] == count_rows["val"]


def test_frameqa_classes_from_train_and_test_without_total(shared_dir, tmp_path):
    spec = task_spec("frameqa")
    test = read_split(spec, shared_dir / "data" / "tgif-qa" / "Test_frameqa_question.csv")
    rows = {"train": test, "val": [], "test": test}
    total = tmp_path / "Total_frameqa_question.csv"
    assert not total.exists()
    classes = answer_classes(spec, rows, tmp_path, top=None)
    assert len(classes) == 933
    counts = Counter(str(row.answer) for row in test)
    assert classes.answers[0] == counts.most_common(1)[0][0]
    assert set(classes.answers) == set(counts)
    # With a Total file, the classes are that file's answers (and only those).
    header = "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription\n"
    total.write_text(
        header + "g1\twhat?\tcat\t0\tF1\t1\ta cat\ng2\twhat?\tdog\t0\tF2\t2\ta dog\n"
        "g3\twhat?\tdog\t0\tF3\t3\ta dog\n"
    )
    assert answer_classes(spec, rows, tmp_path, top=None).answers == ("dog", "cat")


def test_msvd_top_1000_coverage(msvd_rows, shared_dir):
    spec = task_spec("msvd")
    classes = answer_classes(spec, msvd_rows, shared_dir / "data" / "msvd-qa", top=None)
    assert len(classes) == 1000
    train = msvd_rows["train"]
    covered = sum(classes.index(row.answer) is not None for row in train) / len(train)
    assert round(100 * covered, 1) == 96.6
    assert len(answer_classes(spec, msvd_rows, Path("."), top=10)) == 10
    assert answer_classes(task_spec("count"), msvd_rows, Path("."), top=None) is None


def test_action_candidate_tokens(shared_dir):
    spec = task_spec("action")
    folder = shared_dir / "data" / "tgif-qa"
    train = read_tgif(folder / "Train_action_question.csv", "action")
    test = read_tgif(folder / "Test_action_question.csv", "action")
    vocabulary = Vocabulary.build(texts(spec, train), clean_tokens)
    questions = encode_questions(test, spec, vocabulary, clean_tokens, None)
    assert questions.tokens.shape == (len(test), 5, QUESTION_WIDTH) == (2_274, 5, 20)
    assert questions.lengths.shape == (2_274, 5)
    assert questions.targets.dtype == np.int64
    assert set(questions.targets.tolist()) <= set(range(5))
    row = test[0]
    for k, candidate in enumerate(row.candidates):
        ids, length = vocabulary.encode(clean_tokens(f"{row.question} {candidate}"))
        np.testing.assert_array_equal(questions.tokens[0, k], ids)
        assert questions.lengths[0, k] == length


def test_count_targets_are_at_least_one(count_rows):
    spec = task_spec("count")
    vocabulary = Vocabulary.build(texts(spec, count_rows["train"]), clean_tokens)
    test = count_rows["test"]
    questions = encode_questions(test, spec, vocabulary, clean_tokens, None)
    assert questions.targets.dtype == np.float32
    assert questions.targets.min() == 1.0 and not (questions.targets == 0).any()
    zeros = sum(row.answer == 0 for row in test)
    assert zeros == 918  # docs/official-masn.md, "Answers": a quarter of the test answers are 0
    assert int((questions.targets == 1).sum()) == zeros  # no 1s occur in the files
    answers = np.array([row.answer for row in test], dtype=np.float32)
    np.testing.assert_array_equal(questions.targets, np.maximum(answers, 1))


# --------------------------------------------------------------------------- encoding


def _open_rows() -> list[QARow]:
    return [
        QARow(("vid1",), "What is the dog doing?", "dog", qtype="what", source="t:1"),
        QARow(("vid2",), "who is there?", "cat", qtype="who", source="t:2"),
        QARow(("vid3",), "is it red?", "fish", qtype="other", source="t:3"),
        QARow(("vid1",), "where is it?", "red", qtype="where", source="t:4"),
    ]


def test_count_answers_for_an_open_ended_task_are_refused(tmp_path):
    """Count rows (integer answers of our JSONL) given to an open-ended task or model were read
    as the texts "3", "5"..., outside every answer class: 0 % accuracy and no word about it."""
    (tmp_path / "test.jsonl").write_text(
        '{"video": "v1", "question": "how many dogs?", "answer": 3}\n'
    )
    rows = read_split(task_spec("custom", "count"), tmp_path / "test.jsonl")
    vocabulary = Vocabulary.build([row.question for row in rows], clean_tokens)
    spec, classes = task_spec("custom", "open_ended"), AnswerSet(("dog", "cat"))
    expected = (
        f"{tmp_path / 'test.jsonl'}:1: the answer 3 is a count, but the task is open-ended; "
        "count questions need a count task (--task count, or --head count for a custom "
        "collection) and a count model"
    )
    with pytest.raises(InvalidInput, match=f"^{re.escape(expected)}$"):
        encode_questions(rows, spec, vocabulary, clean_tokens, classes)


def test_multiple_choice_rows_for_an_open_ended_task_are_named_as_such():
    """They were called counts (their answer is a candidate's index), with a count task's advice."""
    rows = [QARow(("v1",), "what does it do?", 1, candidates=("sit", "run"), source="m:1")]
    vocabulary = Vocabulary.build([row.question for row in rows], clean_tokens)
    spec, classes = task_spec("custom", "open_ended"), AnswerSet(("sit", "run"))
    with pytest.raises(InvalidInput, match=r"^m:1: the question has candidate answers, but the ta"):
        encode_questions(rows, spec, vocabulary, clean_tokens, classes)


def test_encode_open_ended_policies(caplog):
    spec = task_spec("msvd")
    rows = _open_rows()
    vocabulary = Vocabulary.build([r.question for r in rows], clean_tokens)
    classes = AnswerSet(("dog", "cat", "red"))

    evaluation = encode_questions(rows, spec, vocabulary, clean_tokens, classes, "wrong")
    assert evaluation.targets.dtype == np.int64
    assert evaluation.targets.tolist() == [0, 1, OUT_OF_SET, 2]
    assert evaluation.keys == ["vid1", "vid2", "vid3", "vid1"]
    assert evaluation.qtypes.tolist() == [0, 1, 5, 4]  # what, who, other, where
    assert evaluation.tokens.shape == (4, QUESTION_WIDTH)
    assert evaluation.lengths.tolist() == [6, 4, 4, 4]

    with caplog.at_level(logging.INFO, logger="masn.pipeline.qa.questions"):
        training = encode_questions(rows, spec, vocabulary, clean_tokens, classes, "wrong", True)
    assert "1 training questions have answers outside the 3 classes" in caplog.text
    assert training.targets.tolist() == [0, 1, 2]
    assert [r.source for r in training.rows] == ["t:1", "t:2", "t:4"]
    assert training.keys == ["vid1", "vid2", "vid1"]
    np.testing.assert_array_equal(training.tokens, evaluation.tokens[[0, 1, 3]])

    for is_training in (False, True):
        reference = encode_questions(
            rows, spec, vocabulary, clean_tokens, classes, "reference", is_training
        )
        assert reference.targets.tolist() == [0, 1, REFERENCE_CLASS, 2]

    with pytest.raises(ValueError, match="need an answer set"):
        encode_questions(rows, spec, vocabulary, clean_tokens, None)


def test_encode_count():
    spec = task_spec("count")
    rows = [QARow(("v", "1"), "how many?", n, source=f"c:{n}") for n in (0, 1, 3, 10)]
    vocabulary = Vocabulary.build(["how many?"], clean_tokens)
    questions = encode_questions(rows, spec, vocabulary, clean_tokens, None, training=True)
    assert questions.targets.dtype == np.float32
    assert questions.targets.tolist() == [1.0, 1.0, 3.0, 10.0]
    assert questions.qtypes.tolist() == [0, 0, 0, 0]
    bad = [QARow(("v",), "how many?", "three", source="c.jsonl:7")]
    with pytest.raises(ValueError, match=r"c\.jsonl:7: the answer must be a count") as error:
        encode_questions(bad, spec, vocabulary, clean_tokens, None)
    assert "the task is count; give these questions to a model trained on" in str(error.value)
    for answer, words in [(10**40, "0..1000"), (10**400, "1329 bits"), (-2, "found -2")]:
        bad = [QARow(("v",), "how many?", answer, source="c.jsonl:8")]
        with pytest.raises(InvalidInput, match=rf"c\.jsonl:8: a count must be .*{words}"):
            encode_questions(bad, spec, vocabulary, clean_tokens, None)
    huge = [QARow(("v",), "how many?", 7 * 10**5000, source="c.jsonl:9")]
    with pytest.raises(InvalidInput, match=r"c\.jsonl:9: .*an integer of 16613 bits"):
        encode_questions(huge, spec, vocabulary, clean_tokens, None)


def test_encode_multiple_choice():
    spec = task_spec("action")
    rows = [
        QARow(("v1",), " what does he do? ", 2, candidates=(" run", "sit ", "jump", "a", "b")),
        QARow(("v2",), "what next?", 0, candidates=("wave", "nod", "clap", "c", "d")),
    ]
    vocabulary = Vocabulary.build(texts(spec, rows), official_tokens)
    questions = encode_questions(rows, spec, vocabulary, official_tokens, None)
    assert questions.tokens.shape == (2, 5, QUESTION_WIDTH) and questions.tokens.dtype == np.int64
    assert questions.lengths.shape == (2, 5)
    assert questions.targets.tolist() == [2, 0]
    expected = vocabulary.ids(["what", "does", "he", "do", "\\?", "sit"])
    assert questions.tokens[0, 1, :6].tolist() == expected
    assert questions.tokens[0, 1, 6:].tolist() == [PAD] * (QUESTION_WIDTH - 6)
    assert questions.lengths[0].tolist() == [6, 6, 6, 6, 6]
    assert questions.lengths[1].tolist() == [4, 4, 4, 4, 4]
    subset = questions.subset(np.array([False, True]))
    assert subset.tokens.shape == (1, 5, QUESTION_WIDTH) and subset.targets.tolist() == [0]


def test_encode_question_is_what_encode_questions_stores_per_row():
    """One question alone (masn answer) reads exactly as a row of a split does."""
    vocabulary = Vocabulary.build(["what does he do? run sit jump"], clean_tokens)
    candidates = (" run", "sit ", "swim")
    assert candidate_texts(" what does he do? ", candidates) == [
        "what does he do? run",
        "what does he do? sit",
        "what does he do? swim",
    ]
    ids, lengths = encode_question(" what does he do? ", candidates, vocabulary, clean_tokens)
    row = QARow(("v",), " what does he do? ", 1, candidates=candidates)
    split = encode_questions([row], task_spec("action"), vocabulary, clean_tokens, None)
    assert ids.shape == (3, QUESTION_WIDTH) and lengths.tolist() == [6, 6, 6]
    np.testing.assert_array_equal(ids, split.tokens[0])
    np.testing.assert_array_equal(lengths, split.lengths[0])
    assert ids[2, 5] == UNK  # "swim" is not in the vocabulary
    ids, length = encode_question("what does he do?", (), vocabulary, clean_tokens)
    assert ids.shape == (QUESTION_WIDTH,) and length.shape == () and int(length) == 5
    row = QARow(("v",), "what does he do?", "run")
    split = encode_questions(
        [row], task_spec("msvd"), vocabulary, clean_tokens, AnswerSet(("run", "sit"))
    )
    np.testing.assert_array_equal(ids, split.tokens[0])
    assert split.lengths.tolist() == [5]


def test_encode_multiple_choice_errors():
    spec = task_spec("transition")
    vocabulary = Vocabulary(PLACEHOLDERS)
    good = QARow(("v1",), "q?", 1, candidates=("a", "b", "c"), source="ok:2")
    no_candidates = QARow(("v2",), "q?", 0, source="Test_transition_question.csv:9")
    with pytest.raises(ValueError, match=r"Test_transition_question\.csv:9: .*needs candidates"):
        encode_questions([good, no_candidates], spec, vocabulary, clean_tokens, None)
    fewer = QARow(("v3",), "q?", 0, candidates=("a", "b"), source="ok:3")
    with pytest.raises(ValueError, match="same number of candidates"):
        encode_questions([good, fewer], spec, vocabulary, clean_tokens, None)
    with pytest.raises(
        InvalidInput, match=r"^ok:3: 2 candidates, but the first question \(ok:2\) has 3"
    ):
        encode_questions([good, good, fewer, good], spec, vocabulary, clean_tokens, None)
    outside = QARow(("v4",), "q?", 3, candidates=("a", "b", "c"), source="bad:4")
    with pytest.raises(ValueError, match="bad:4: answer index 3 outside"):
        encode_questions([outside], spec, vocabulary, clean_tokens, None)


# --------------------------------------------------------------------------- feature stores

WIDTHS = {"appearance": 8, "motion": 6}
OBJECTS = 3
LENGTHS = {"vid1": 3, "vid2": 7, "vid3": 12, "vid4": 5}  # T = 5: shorter, longer, equal


def _write_store(path: Path, lengths: dict[str, int], dtype: str = "float16") -> Path:
    rng = np.random.default_rng(7)
    records = [
        random_record(key, frames, rng, OBJECTS, WIDTHS["appearance"], WIDTHS["motion"])
        for key, frames in lengths.items()
    ]
    return write_store(path, records, {"test": "pipeline_data"}, {"detector": "random"}, dtype)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """A float16 store of LENGTHS and its official msvd export (a folder)."""
    folder = tmp_path_factory.mktemp("features")
    store = _write_store(folder / "ours.h5", LENGTHS)
    export_official(store, folder / "official", "msvd")
    return store, folder / "official"


def _questions(lengths: dict[str, int] = LENGTHS):
    spec = task_spec("msvd")
    rows = [
        QARow((key,), f"what is in {key} number {q}?", ("dog", "cat")[q % 2], qtype="what")
        for key in lengths
        for q in range(2)
    ]
    vocabulary = Vocabulary.build([r.question for r in rows], clean_tokens)
    return encode_questions(rows, spec, vocabulary, clean_tokens, AnswerSet(("dog", "cat")))


def test_attach_features_drops_missing_videos(sources, caplog):
    rows = [
        QARow(("vid1",), "a?", "x"),
        QARow(("vid9",), "b?", "x"),
        QARow(("vid2",), "c?", "x"),
        QARow(("vid9",), "d?", "x"),
        QARow(("vid8",), "e?", "x"),
    ]
    vocabulary = Vocabulary(PLACEHOLDERS)
    spec = task_spec("msvd")
    questions = encode_questions(rows, spec, vocabulary, clean_tokens, AnswerSet(("x", "y")))
    with (
        FeatureStore(sources[0]) as store,
        caplog.at_level(logging.WARNING, "masn.pipeline.qa.questions"),
    ):
        attached = attach_features(questions, store, "val")
    assert attached.keys == ["vid1", "vid2"]
    assert [r.question for r in attached.rows] == ["a?", "c?"]
    assert len(attached.tokens) == len(attached.targets) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "val: 3 of 5 questions (2 videos) have no features" in message
    assert "'vid8', 'vid9'" in message and "left out" in message


def test_attach_features_all_missing_raises(sources):
    rows = [QARow((f"clip{i}",), "a?", "x") for i in range(8)]
    spec = task_spec("msvd")
    questions = encode_questions(
        rows, spec, Vocabulary(PLACEHOLDERS), clean_tokens, AnswerSet(("x", "y"))
    )
    with FeatureStore(sources[0]) as store, pytest.raises(KeyError) as error:
        attach_features(questions, store, "train")
    text = str(error.value)
    assert "train: 8 of 8 questions (8 videos)" in text
    assert "'clip0'" in text and "'clip4'" in text and "'clip5'" not in text  # 5 examples
    assert "'vid1'" in text  # the source's keys, to compare


def test_attach_features_resolves_tgif_keys(tmp_path, caplog):
    # An imported official TGIF store is keyed by the integer key; ours by the GIF name.
    store = _write_store(tmp_path / "tgif.h5", {"123": 2, "456": 3, "tumblr_c": 1})
    rows = [
        QARow(("tumblr_a", "123"), "how many?", 2),
        QARow(("tumblr_b", "456"), "how many?", 3),
        QARow(("tumblr_c", "789"), "how many?", 4),
        QARow(("tumblr_a", "123"), "how many again?", 0),
    ]
    spec = task_spec("count")
    questions = encode_questions(rows, spec, Vocabulary(PLACEHOLDERS), clean_tokens, None)
    assert questions.keys == ["tumblr_a", "tumblr_b", "tumblr_c", "tumblr_a"]
    with FeatureStore(store) as source, caplog.at_level(logging.WARNING):
        attached = attach_features(questions, source, "train")
        assert attached.keys == ["123", "456", "tumblr_c", "123"]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        item, length, index = QADataset(attached, source, 4, "first")[1]
        assert (length, index) == (3, 1)
        expected = source.read("456").appearance
        np.testing.assert_array_equal(item["appearance"][:3], expected)


# --------------------------------------------------------------------------- frames, datasets


def test_frame_indices():
    assert frame_indices(10, 4, "uniform").tolist() == [0, 3, 6, 9]
    assert frame_indices(10, 4, "first").tolist() == [0, 1, 2, 3]
    for sampling in ("first", "uniform"):
        assert frame_indices(3, 5, sampling).tolist() == [0, 1, 2]
        assert frame_indices(5, 5, sampling).tolist() == [0, 1, 2, 3, 4]
        assert frame_indices(1, 20, sampling).tolist() == [0]
    uniform = frame_indices(100, 20, "uniform")
    assert len(uniform) == 20 and uniform[0] == 0 and uniform[-1] == 99
    assert (np.diff(uniform) > 0).all() and np.issubdtype(uniform.dtype, np.integer)
    assert frame_indices(12, 5, "uniform").tolist() == [0, 3, 6, 8, 11]


@pytest.mark.parametrize("sampling", ["first", "uniform"])
def test_dataset_pads_truncates_and_resamples(sources, sampling):
    questions = _questions()
    frames = 5
    with FeatureStore(sources[0]) as store:
        dataset = QADataset(questions, store, frames, sampling)
        assert len(dataset) == 8
        for index in range(len(dataset)):
            arrays, length, at = dataset[index]
            key = questions.keys[index]
            record = store.read(key)
            assert at == index
            assert length == min(LENGTHS[key], frames)
            chosen = frame_indices(LENGTHS[key], frames, sampling)
            for field, name in VIDEO_FIELDS.items():
                stored = getattr(record, field)
                assert arrays[name].shape == (frames, *stored.shape[1:])
                assert arrays[name].dtype == stored.dtype
                np.testing.assert_array_equal(arrays[name][:length], stored[chosen])
                assert not arrays[name][length:].any()  # padding frames are zero
        # vid3 (12 frames): its first 5 frames, or 5 spread over all 12.
        arrays, _, _ = dataset[4]
        picked = [0, 1, 2, 3, 4] if sampling == "first" else [0, 3, 6, 8, 11]
        np.testing.assert_array_equal(arrays["motion"], store.read("vid3").motion[picked])


def test_dataset_rejects_unknown_sampling(sources):
    with FeatureStore(sources[0]) as store, pytest.raises(ValueError, match="sampling"):
        QADataset(_questions(), store, 5, "random")


def _batches(dataset: QADataset, questions, batches: list[list[int]]) -> list[Batch]:
    collate = Collate(questions)
    return [collate([dataset[i] for i in batch]) for batch in batches]


def _assert_same_batches(a: list[Batch], b: list[Batch], cast: bool = False) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for name in (*VIDEO_FIELDS.values(), "lengths"):
            u, v = getattr(x.video, name), getattr(y.video, name)
            if cast:
                u, v = u.float(), v.float()
            assert u.dtype == v.dtype, name
            torch.testing.assert_close(u, v, rtol=0, atol=0, msg=name)
        for name in ("tokens", "lengths", "targets", "qtypes", "index"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name


def test_store_and_official_give_identical_batches(sources):
    questions = _questions()
    order = [[0, 5, 2], [7, 1], [3, 4, 6]]
    with open_features(sources[0]) as store, open_features(sources[1]) as official:
        assert isinstance(store, FeatureStore)
        assert isinstance(official, OfficialFeatures) and official.dataset == "msvd"
        ours = _batches(QADataset(questions, store, 5, "uniform"), questions, order)
        theirs = _batches(QADataset(questions, official, 5, "uniform"), questions, order)
    _assert_same_batches(ours, theirs, cast=True)
    first = ours[0]
    assert first.video.appearance.dtype == torch.float16  # a float16 store stays float16
    assert first.video.motion_objects.dtype == torch.float16
    assert first.video.boxes.dtype == torch.float32
    assert theirs[0].video.appearance.dtype == torch.float32  # the official files are float32
    assert first.video.appearance.shape == (3, 5, WIDTHS["appearance"])
    assert first.video.appearance_objects.shape == (3, 5, OBJECTS, WIDTHS["appearance"])
    assert first.video.motion.shape == (3, 5, WIDTHS["motion"])
    assert first.video.boxes.shape == (3, 5, OBJECTS, 6)
    # Questions 0, 5, 2 are on vid1 (3 frames), vid3 (12) and vid2 (7).
    assert first.video.lengths.tolist() == [3, 5, 5]
    assert not first.video.appearance[0, 3:].any() and first.video.appearance[0, :3].all()
    assert len(first) == 3 and first.index.tolist() == [0, 5, 2]
    assert torch.equal(first.tokens, torch.from_numpy(questions.tokens[[0, 5, 2]]))
    assert first.targets.tolist() == [0, 1, 0] and first.targets.dtype == torch.int64


def test_batch_to_casts_features_to_float32(sources):
    questions = _questions()
    with FeatureStore(sources[0]) as store:
        batch = _batches(QADataset(questions, store, 5, "first"), questions, [[1, 2]])[0]
    moved = batch.to(torch.device("cpu"))
    assert moved.video.appearance.dtype == torch.float32
    assert moved.video.lengths.dtype == torch.int64
    torch.testing.assert_close(moved.video.appearance, batch.video.appearance.float())
    assert moved.lengths is batch.lengths and moved.index is batch.index


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_batch_pin_memory(sources):
    questions = _questions()
    with FeatureStore(sources[0]) as store:
        batch = _batches(QADataset(questions, store, 5, "first"), questions, [[0, 3]])[0]
    pinned = batch.pin_memory()
    for name in (*VIDEO_FIELDS.values(), "lengths"):
        assert getattr(pinned.video, name).is_pinned(), name
    for name in ("tokens", "lengths", "targets", "qtypes", "index"):
        assert getattr(pinned, name).is_pinned(), name
    _assert_same_batches([batch], [pinned])


def test_dataloader_workers_give_the_same_batches(sources):
    questions = _questions()
    with FeatureStore(sources[0]) as store:
        store.keys()  # the parent has the file open before the workers fork
        dataset = QADataset(questions, store, 5, "uniform")
        loaded = {}
        for workers in (0, 2):
            sampler = StepSampler(len(dataset), 3, seed=4)
            loader = DataLoader(
                dataset, batch_sampler=sampler, collate_fn=Collate(questions), num_workers=workers
            )
            loaded[workers] = list(loader)
        expected = _batches(dataset, questions, list(StepSampler(len(dataset), 3, seed=4)))
    assert len(loaded[0]) == 3  # 8 questions in batches of 3: 3, 3, 2
    _assert_same_batches(loaded[0], expected)
    _assert_same_batches(loaded[2], expected)
