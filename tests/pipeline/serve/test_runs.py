"""The Results and Compare views' reading of runs: evaluation folders as masn evaluate writes
them, written by hand here so that every count is known."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from masn.errors import InvalidInput, MissingInput
from masn.pipeline.serve.runs import Run, compare, paged, question_keys


def evaluation(folder: Path, lines: list[dict], annotations: Path | None = None, **metrics):
    """An evaluation folder of ``lines`` (prediction lines) and metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"task": "custom", "split": "test", "masn": {"questions": len(lines)}, **metrics}
    if annotations is not None:
        record["annotations"] = str(annotations)
    (folder / "metrics.json").write_text(json.dumps(record))
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (folder / "predictions.jsonl").write_text(text)
    return folder


def open_line(n: int, answer: str, prediction: str, qtype: str = "what", score: float = 0.5):
    return {
        "source": f"/data/qa/test.jsonl:{n}",
        "video": f"v{n % 3}",
        "question": f"question {n}",
        "answer": answer,
        "type": qtype,
        "correct": answer == prediction,
        "prediction": prediction,
        "top": [[prediction, score]],
    }


LINES = [
    open_line(1, "dog", "cat", score=0.9),
    open_line(2, "dog", "dog", "who", 0.2),
    open_line(3, "dog", "cat", score=0.4),
    open_line(4, "red", "blue", "who", 0.7),
    open_line(5, "red", "red", score=0.6),
]


def test_a_runs_table_filters_sorts_and_finds_the_most_confused_answers(tmp_path: Path):
    run = Run(0, evaluation(tmp_path / "evaluate-test", LINES))
    assert run.checkpoint is None and run.name == f"{tmp_path.name}/evaluate-test"
    result = run.evaluation()
    assert result.head == "open_ended" and result.types == ["what", "who"]
    assert result.confusions() == [("dog", "cat", 2), ("red", "blue", 1)]
    assert [q.position for q in run.table(correct="wrong")] == [0, 2, 3]
    assert [q.position for q in run.table(qtype="who")] == [1, 3]
    assert [q.position for q in run.table(answer="DOG", predicted="cat")] == [0, 2]
    assert [q.position for q in run.table(text="QUESTION 4")] == [3]
    scores = [q.position for q in run.table(sort="score", descending=True)]
    assert scores == [0, 3, 4, 2, 1]
    assert [q.position for q in run.table(sort="correct")] == [0, 2, 3, 1, 4]
    with pytest.raises(InvalidInput, match="cannot sort by"):
        run.table(sort="../etc")
    with pytest.raises(InvalidInput, match="right/wrong filter"):
        run.table(correct="maybe")
    page = paged(run.table(), 2, 2)
    assert ([q.position for q in page.rows], page.page, page.pages) == ([4], 2, 3)


def test_an_evaluation_rewritten_on_disk_is_read_again(tmp_path: Path):
    folder = evaluation(tmp_path / "evaluate-test", LINES)
    run = Run(0, folder)
    assert len(run.evaluation().questions) == 5
    evaluation(folder, LINES[:2])
    stamp = (folder / "predictions.jsonl").stat().st_mtime_ns + 10**9
    os.utime(folder / "predictions.jsonl", ns=(stamp, stamp))
    assert len(run.evaluation().questions) == 2


def test_count_lines_show_their_raw_output(tmp_path: Path):
    line = {**open_line(1, "x", "x"), "answer": 3, "prediction": 2, "correct": False}
    del line["top"]
    line["output"] = 2.4
    result = Run(0, evaluation(tmp_path / "e", [line])).evaluation()
    (question,) = result.questions
    assert result.head == "count" and (question.answer, question.prediction) == ("3", "2")
    assert question.score == 2.4


def choice_line(n: int, answer: int, prediction: int) -> dict:
    return {
        "source": f"/elsewhere/test.jsonl:{n}",
        "video": "v",
        "question": f"what does it do {n}?",
        "answer": answer,
        "type": "",
        "correct": answer == prediction,
        "prediction": prediction,
        "top": [[prediction, 0.8], [answer, 0.1]],
    }


def test_multiple_choice_candidates_come_from_the_annotations(tmp_path: Path):
    questions = tmp_path / "qa"
    questions.mkdir()
    rows = [
        {"video": "v", "question": "what does it do 1?", "candidates": ["sit", "run"], "answer": 1},
        {"video": "v", "question": "what does it do 2?", "candidates": ["eat", "fly"], "answer": 0},
    ]
    for split in ("train", "test"):
        (questions / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = [choice_line(1, 1, 0), choice_line(2, 0, 0)]
    moved = tmp_path / "moved"  # the folder the evaluation recorded is gone
    result = Run(0, evaluation(tmp_path / "e", lines, moved)).evaluation()
    assert result.head == "multiple_choice" and "--annotations" in result.note
    assert result.questions[0].answer == "1"
    found = Run(0, evaluation(tmp_path / "f", lines, moved), annotations=questions).evaluation()
    first, second = found.questions
    assert (first.answer, first.prediction, first.candidates) == ("run", "sit", ("sit", "run"))
    assert first.top == (("sit", 0.8), ("run", 0.1))
    assert (second.answer, second.prediction) == ("eat", "eat") and not found.note


def test_runs_compare_question_by_question(tmp_path: Path):
    other = [dict(line) for line in LINES]
    for line, prediction in zip(other, ["dog", "dog", "cat", "red", "blue"], strict=True):
        line["prediction"], line["correct"] = prediction, prediction == line["answer"]
    a = Run(0, evaluation(tmp_path / "a" / "evaluate-test", LINES))
    b = Run(1, evaluation(tmp_path / "b" / "evaluate-test", other[::-1]))  # any line order
    comparison = compare([a, b])
    # a is right on 2 and 5; b on 1, 2 and 4.
    assert comparison.right == [2, 3] and comparison.questions == 5
    assert comparison.matrix == [[0, 1], [2, 0]] and comparison.agreed == (1, 1)
    assert [row[0].position for row in comparison.rows] == [0, 3, 4]
    only_b = compare([a, b], right=1, wrong=0)
    assert [(row[0].position, row[1].prediction) for row in only_b.rows] == [(0, "dog"), (3, "red")]


def test_runs_on_different_questions_are_refused_with_how_they_differ(tmp_path: Path):
    a = Run(0, evaluation(tmp_path / "a", LINES))
    b = Run(1, evaluation(tmp_path / "b", LINES[:3]))
    differ = r"answered different questions \(5 and 3, 3 in common\)"
    with pytest.raises(InvalidInput, match=differ):
        compare([a, b])
    with pytest.raises(InvalidInput, match="at least two runs"):
        compare([a])


def test_repeated_questions_stay_distinct():
    line = {"source": "", "video": "v", "question": "how many?"}
    assert question_keys([line, line]) == [("", "v", "how many?", 0), ("", "v", "how many?", 1)]


def test_a_run_path_must_be_a_run_an_evaluation_or_a_checkpoint(tmp_path: Path):
    with pytest.raises(MissingInput, match="no such run folder"):
        Run(0, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInput, match="neither a run folder"):
        Run(0, tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="checkpoint"):
        Run(0, tmp_path / "notes.txt")
    run_folder = tmp_path / "run"
    evaluation(run_folder / "evaluate-val", LINES)
    evaluation(run_folder / "evaluate-test", LINES)
    (run_folder / "best.pt").write_bytes(b"")
    run = Run(3, run_folder)
    assert (run.checkpoint, run.folder, run.name) == (
        run_folder / "best.pt",
        run_folder / "evaluate-test",
        "run",
    )
    assert Run(4, run_folder / "evaluate-val").checkpoint == run_folder / "best.pt"
