"""The divergence watch on its own: the device-side note, the checks and their messages (the
trainer's use of it is tested end to end in test_trainer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from masn.datasets import task_spec
from masn.datasets.annotations import QARow
from masn.model import MASN, MASNConfig
from masn.pipeline.qa.answer_set import AnswerSet
from masn.pipeline.qa.questions import Batch, encode_questions
from masn.pipeline.qa.text import Vocabulary, clean_tokens
from masn.pipeline.training.distributed import Process
from masn.pipeline.training.divergence import (
    NAMED,
    Diverged,
    DivergenceWatch,
    numbers,
    question_names,
)
from masn.pipeline.training.resume import LoopState

RUN = Path("runs/x")


def make_watch() -> DivergenceWatch:
    """A watch over 12 questions from lines 1..10 of train.jsonl and two without a source."""
    rows = [QARow((f"v{i}",), "what?", "a", source=f"train.jsonl:{i + 1}") for i in range(10)]
    rows += [QARow(("k1",), "what?", "a"), QARow(("k2",), "what?", "a")]
    vocabulary = Vocabulary.build(["what?"], clean_tokens)
    spec = task_spec("msvd")
    questions = encode_questions(rows, spec, vocabulary, clean_tokens, AnswerSet(("a", "b")))
    return DivergenceWatch(questions, Process(), torch.device("cpu"), 1e-3, RUN)


def batch_of(index: list[int]) -> Batch:
    """A batch that only says which questions it holds (all the watch reads of it)."""
    return Batch(None, None, None, None, None, torch.tensor(index))  # type: ignore[arg-type]


def step(watch: DivergenceWatch, state: LoopState, loss: float, index: list[int]) -> None:
    state.step += 1
    state.global_step += 1
    watch.note(torch.tensor(loss), batch_of(index), state)


def test_question_names_group_lines_by_file_and_count_the_rest():
    assert question_names(["a.jsonl:3", "a.jsonl:9", "key", "b.csv:2"]) == (
        "a.jsonl lines 3, 9, b.csv line 2, key"
    )
    assert question_names(["d/qa.json entry 0", "d/qa.json entry 7", "e.json entry 3"]) == (
        "d/qa.json entries 0, 7, e.json entry 3"
    )
    names = [f"t.jsonl:{i}" for i in range(NAMED + 3)]
    assert question_names(names) == "t.jsonl lines 0, 1, 2, 3, 4, 5, 6, 7 and 3 more"


def test_numbers_are_every_float_of_nested_metrics():
    metrics = {"val": {"accuracy": 50.0, "questions": 4, "per_type": {"a": {"mse": None}}}}
    assert numbers(metrics) == [50.0]
    assert numbers({"val": {"accuracy": float("nan")}, "x": 1.5})[1] == 1.5


def test_finite_losses_pass_and_the_notes_are_cleared():
    watch, state = make_watch(), LoopState()
    step(watch, state, 0.5, [0, 1])
    step(watch, state, 0.4, [2, 3])
    assert list(watch.recent) == [1, 2]
    watch.check_losses(state)
    assert watch.recent == {}


def test_the_first_non_finite_loss_is_named_with_its_batch():
    watch, state = make_watch(), LoopState(epoch=1)
    step(watch, state, 0.5, [0])
    step(watch, state, float("nan"), list(range(12)))
    step(watch, state, float("inf"), [5])  # later bad steps do not replace the first
    with pytest.raises(Diverged) as caught:
        watch.check_losses(state)
    message = str(caught.value)
    assert "\n" not in message and "at step 2 (epoch 2)" in message
    assert "train.jsonl lines 1, 2, 3, 4, 5, 6, 7, 8 and 4 more" in message
    assert "lower --lr (now 0.001)" in message and message.endswith("Nothing was saved.")


def test_the_messages_say_which_checkpoints_hold_a_good_state():
    watch = make_watch()
    watch.saved = "step 5 of epoch 3"
    state = LoopState(epoch=2, global_step=25, best_epoch=1)
    model = MASN(MASNConfig(vocab_size=10, task="open_ended", num_answers=4, hidden=16))
    watch.check_model(model, state)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(Diverged, match="weights are not finite after step 25 \\(epoch 3\\)") as w:
        watch.check_model(model, state)
    kept = f"{RUN / 'last.pt'} holds the state after step 5 of epoch 3; {RUN / 'best.pt'} the "
    assert str(w.value).endswith(kept + "model of epoch 2.")
    watch.check_metrics({"val": {"accuracy": 50.0, "per_type": {}}}, state)
    with pytest.raises(Diverged, match="metrics after epoch 3 are not finite"):
        watch.check_metrics({"val": {"accuracy": float("nan")}}, state)
