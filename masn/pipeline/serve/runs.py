"""The Results and Compare views' data: the runs given to `masn serve`, their evaluations
(``metrics.json`` and ``predictions.jsonl`` of `masn evaluate`), filtered, sorted and paged
tables of their questions, the most confused answers, and where runs evaluated on the same
questions disagree.

A question is the same in two runs when its annotation file name and line (or entry), its video
and its text are: runs of one task read the same files even from another folder. Runs whose
question sets differ cannot be compared (the page says so). Evaluations are read on first use
and read again when their files change.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from masn.datasets import task_spec
from masn.datasets.splits import read_split, split_files
from masn.errors import InvalidInput, MissingInput, UnknownName, UserError
from masn.pipeline.training.settings import BEST

log = logging.getLogger(__name__)

METRICS, PREDICTIONS = "metrics.json", "predictions.jsonl"
CONFUSIONS = 10  # most confused (answer, prediction) pairs shown
SORTS = ("position", "video", "question", "type", "answer", "prediction", "score", "correct")
CORRECTNESS = ("", "right", "wrong")

QuestionKey = tuple[str, str, str, int]


@dataclass(frozen=True)
class Question:
    """One evaluated question as the tables show it.

    position: its line in predictions.jsonl (from 0). answer / prediction: display texts
    (a multiple-choice candidate's text where the annotations are readable). score: the top
    answer's score, or a count's raw output. answer_value: the answer as the files hold it.
    """

    position: int
    key: QuestionKey
    video: str
    question: str
    qtype: str
    answer: str
    prediction: str
    correct: bool
    score: float | None
    top: tuple[tuple[str, float], ...]
    candidates: tuple[str, ...] = ()


@dataclass
class Evaluation:
    """One evaluation of a run: its metrics and its questions."""

    folder: Path
    metrics: dict[str, Any]
    questions: list[Question]
    head: str
    note: str = ""  # e.g. why multiple-choice candidates are missing
    by_key: dict[QuestionKey, Question] = field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        return sorted({q.qtype for q in self.questions if q.qtype})

    def summary(self) -> dict[str, Any]:
        """MASN's figures (questions, accuracy or MSE, per type) as metrics.json holds them."""
        return dict(self.metrics.get("masn", {}))

    def baseline(self) -> tuple[str, dict[str, Any]] | None:
        """The baseline without the video that `masn evaluate` reported, if any."""
        for name, value in self.metrics.items():
            if name.endswith("_baseline") and isinstance(value, dict):
                return name.replace("_", " "), value
        return None

    def confusions(self) -> list[tuple[str, str, int]]:
        """The most frequent (answer, wrong prediction) pairs with their counts."""
        pairs = Counter((q.answer, q.prediction) for q in self.questions if not q.correct)
        return [(answer, wrong, n) for (answer, wrong), n in pairs.most_common(CONFUSIONS)]


@dataclass(frozen=True)
class Table:
    """A page of a filtered, sorted question table."""

    rows: list[Any]
    page: int
    pages: int
    matches: int


def paged(rows: Sequence[Any], page: int, size: int) -> Table:
    """Page ``page`` (from 0; clamped into range) of ``rows``."""
    pages = max(1, -(-len(rows) // size))
    page = min(max(0, page), pages - 1)
    return Table(list(rows[page * size : (page + 1) * size]), page, pages, len(rows))


def head_of(line: dict[str, Any]) -> str:
    """The model head a prediction line comes from."""
    if "output" in line:
        return "count"
    return "multiple_choice" if isinstance(line.get("prediction"), int) else "open_ended"


def _text(value: Any, candidates: Sequence[str]) -> str:
    """Display text of an answer: a candidate's text for an index where candidates are known."""
    if isinstance(value, int) and not isinstance(value, bool) and candidates:
        return candidates[value] if 0 <= value < len(candidates) else f"#{value}"
    return str(value)


def question_keys(lines: list[dict[str, Any]]) -> list[QuestionKey]:
    """The identity of each prediction line across runs (file name and line, video, text,
    and which repetition of the three it is)."""
    seen: Counter[tuple[str, str, str]] = Counter()
    keys = []
    for line in lines:
        source = str(line.get("source", ""))
        base = (Path(source).name if source else "", str(line["video"]), str(line["question"]))
        keys.append((*base, seen[base]))
        seen[base] += 1
    return keys


class Run:
    """One ``--run`` of masn serve: its model (for Ask) and its evaluation (for Results)."""

    def __init__(self, index: int, path: Path, annotations: Path | None = None):
        self.index, self.path, self.annotations = index, Path(path), annotations
        self.checkpoint, self.folder = _locate(self.path)
        self.name = self.path.name if self.folder != self.path else _evaluation_name(self.path)
        self._lock = threading.Lock()
        self._evaluation: Evaluation | None = None
        self._stamp: tuple[float, ...] | None = None

    def __repr__(self) -> str:
        return f"Run({self.index}, {str(self.path)!r})"

    def evaluation(self) -> Evaluation | None:
        """The run's evaluation (None without one), read again when its files changed."""
        if self.folder is None:
            return None
        files = (self.folder / METRICS, self.folder / PREDICTIONS)
        try:
            stamp = tuple(path.stat().st_mtime_ns for path in files)
        except FileNotFoundError:
            raise MissingInput(
                f"the evaluation of run {self.name!r} is gone from {self.folder}: run masn "
                "evaluate again"
            ) from None
        with self._lock:
            if self._evaluation is None or stamp != self._stamp:
                self._evaluation = read_evaluation(self.folder, self.annotations)
                self._stamp = stamp
            return self._evaluation

    def table(
        self,
        qtype: str = "",
        correct: str = "",
        answer: str = "",
        predicted: str = "",
        text: str = "",
        sort: str = "position",
        descending: bool = False,
    ) -> list[Question]:
        """The questions that pass the filters (empty: any), sorted."""
        evaluation = self.evaluation()
        if evaluation is None:
            return []
        if correct not in CORRECTNESS:
            raise InvalidInput(f"right/wrong filter {correct!r}: use right, wrong or nothing")
        if sort not in SORTS:
            raise InvalidInput(f"cannot sort by {sort!r}; choose one of {', '.join(SORTS)}")
        answer, predicted, text = answer.casefold(), predicted.casefold(), text.casefold()
        tests: list[Callable[[Question], bool]] = []
        if qtype:
            tests.append(lambda q: q.qtype == qtype)
        if correct:
            tests.append(lambda q: q.correct == (correct == "right"))
        if answer:
            tests.append(lambda q: q.answer.casefold() == answer)
        if predicted:
            tests.append(lambda q: q.prediction.casefold() == predicted)
        if text:
            tests.append(lambda q: text in q.question.casefold() or text in q.video.casefold())
        rows = [q for q in evaluation.questions if all(test(q) for test in tests)]
        return sorted(rows, key=_sort_key(sort), reverse=descending)


def _sort_key(sort: str) -> Callable[[Question], Any]:
    if sort == "score":
        return lambda q: (q.score is None, q.score or 0.0, q.position)
    if sort == "correct":
        return lambda q: (q.correct, q.position)
    return lambda q: (str(getattr(q, "qtype" if sort == "type" else sort)), q.position)


def _evaluation_name(folder: Path) -> str:
    """An evaluation folder's name with its run's: ``frameqa/evaluate-test``."""
    return f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name


def _locate(path: Path) -> tuple[Path | None, Path | None]:
    """(checkpoint, evaluation folder) of a ``--run`` path; either may be None."""
    if path.is_file():
        if path.suffix != ".pt":
            raise InvalidInput(
                f"--run {path}: give a run folder, an evaluation folder or a checkpoint (.pt)"
            )
        return path, None
    if not path.is_dir():
        raise MissingInput(f"--run {path}: no such run folder or checkpoint")
    if (path / METRICS).is_file() and (path / PREDICTIONS).is_file():
        return _evaluated_checkpoint(path), path
    if (path / BEST).is_file():
        evaluations = sorted(
            folder
            for folder in path.glob("evaluate-*")
            if (folder / METRICS).is_file() and (folder / PREDICTIONS).is_file()
        )
        preferred = [folder for folder in evaluations if folder.name == "evaluate-test"]
        return path / BEST, (preferred or evaluations or [None])[0]
    raise MissingInput(
        f"--run {path}: neither a run folder of masn train ({BEST}) nor an evaluation folder of "
        f"masn evaluate ({METRICS}, {PREDICTIONS})"
    )


def _evaluated_checkpoint(folder: Path) -> Path | None:
    """The checkpoint an evaluation folder's metrics name, or its run folder's best.pt."""
    try:
        named = json.loads((folder / METRICS).read_text()).get("checkpoint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        named = None
    for candidate in (Path(named) if named else None, folder.parent / BEST):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def read_evaluation(folder: Path, annotations: Path | None = None) -> Evaluation:
    """The metrics and questions of an evaluation folder; multiple-choice candidates come from
    the annotation files (the folder the evaluation recorded, else ``annotations``)."""
    try:
        metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
        lines = [
            json.loads(line)
            for line in (folder / PREDICTIONS).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{folder}: unreadable evaluation files ({error})") from None
    if not isinstance(metrics, dict):
        raise InvalidInput(f"{folder / METRICS} is not a metrics file of masn evaluate")
    head = head_of(lines[0]) if lines else "open_ended"
    candidates: dict[str, tuple[str, ...]] = {}
    note = ""
    if head == "multiple_choice":
        candidates, note = _candidates(metrics, head, annotations)
    keys = question_keys(lines)
    questions = []
    for position, (line, key) in enumerate(zip(lines, keys, strict=True)):
        choices = candidates.get(key[0], ())
        top = tuple((_text(answer, choices), float(score)) for answer, score in line.get("top", []))
        output = line.get("output")
        questions.append(
            Question(
                position=position,
                key=key,
                video=str(line["video"]),
                question=str(line["question"]),
                qtype=str(line.get("type") or ""),
                answer=_text(line["answer"], choices),
                prediction=_text(line["prediction"], choices),
                correct=bool(line["correct"]),
                score=float(output) if output is not None else (top[0][1] if top else None),
                top=top,
                candidates=choices,
            )
        )
    evaluation = Evaluation(folder, metrics, questions, head, note)
    evaluation.by_key = {q.key: q for q in questions}
    return evaluation


def _candidates(
    metrics: dict[str, Any], head: str, annotations: Path | None
) -> tuple[dict[str, tuple[str, ...]], str]:
    """Each annotation row's candidates by ``file:line`` (the source's file name), and a note
    when they cannot be read."""
    recorded = Path(str(metrics.get("annotations", "")))
    folder = recorded if recorded.is_dir() else annotations
    if folder is None:
        return {}, (
            f"the candidates' texts are in {recorded}, which is not there: pass masn serve "
            "--annotations DIR"
        )
    task = str(metrics.get("task", "custom"))
    try:
        spec = task_spec(task, head if task == "custom" else None)
        rows = [
            row
            for path in split_files(spec, folder).values()
            if path.is_file()
            for row in read_split(spec, path)
        ]
    except UserError as error:
        return {}, f"the candidates' texts could not be read: {error}"
    return {Path(row.source).name: tuple(row.candidates) for row in rows}, ""


@dataclass(frozen=True)
class Comparison:
    """Runs evaluated on the same questions, side by side.

    right: questions each run got right. matrix[i][j]: questions run i got right and run j
    wrong. agreed: questions all runs got right, and all got wrong. rows: the questions on
    which the runs disagree, one tuple of per-run answers each.
    """

    runs: list[Run]
    questions: int
    right: list[int]
    matrix: list[list[int]]
    agreed: tuple[int, int]
    rows: list[tuple[Question, ...]]


def compare(runs: Sequence[Run], right: int | None = None, wrong: int | None = None) -> Comparison:
    """Where ``runs`` disagree; with ``right`` / ``wrong`` (positions in ``runs``) only the
    questions the one got right and the other wrong. Runs evaluated on different questions are
    refused with a message that says how they differ."""
    if len(runs) < 2:
        raise InvalidInput("choose at least two runs to compare")
    evaluations = []
    for run in runs:
        evaluation = run.evaluation()
        if evaluation is None:
            raise InvalidInput(f"run {run.name!r} has no evaluation to compare (masn evaluate)")
        evaluations.append(evaluation)
    first = evaluations[0]
    for run, evaluation in zip(runs[1:], evaluations[1:], strict=True):
        if evaluation.by_key.keys() != first.by_key.keys():
            shared = len(evaluation.by_key.keys() & first.by_key.keys())
            raise InvalidInput(
                f"runs {runs[0].name!r} and {run.name!r} answered different questions "
                f"({len(first.questions)} and {len(evaluation.questions)}, {shared} in common): "
                "compare runs evaluated on the same test questions (ablations or feature "
                "backbones of one task)"
            )
    for position in (right, wrong):
        if position is not None and not 0 <= position < len(runs):
            raise UnknownName(f"no run at position {position} of the comparison")
    table = [tuple(e.by_key[q.key] for e in evaluations) for q in first.questions]
    count = len(runs)
    matrix = [
        [sum(row[i].correct and not row[j].correct for row in table) for j in range(count)]
        for i in range(count)
    ]
    verdicts = [{q.correct for q in row} for row in table]
    agreed = (verdicts.count({True}), verdicts.count({False}))
    rows = [row for row, verdict in zip(table, verdicts, strict=True) if len(verdict) > 1]
    if right is not None:
        rows = [row for row in rows if row[right].correct]
    if wrong is not None:
        rows = [row for row in rows if not row[wrong].correct]
    return Comparison(
        list(runs),
        len(table),
        [sum(row[i].correct for row in table) for i in range(count)],
        matrix,
        agreed,
        rows,
    )
