"""The divergence watch of a training run: non-finite losses, weights and metrics stop it.

A loss that is not finite stops the run with :class:`Diverged`, naming the step, the epoch and
the questions of the batch. The step itself never waits for the GPU: :meth:`DivergenceWatch.note`
only marks, on the device, the first step whose loss was not finite, and the loop looks at that
mark (:meth:`DivergenceWatch.check_losses`) where it synchronises anyway (every ``log_every``
steps, before a checkpoint, at the epoch end). A model with non-finite weights or validation
metrics is never written, so ``best.pt`` and ``last.pt`` keep the last good state; every message
says which checkpoints hold it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from masn.errors import InvalidInput
from masn.model import MASN
from masn.pipeline.qa.questions import Batch, Questions
from masn.pipeline.training.distributed import Process
from masn.pipeline.training.resume import LoopState

NO_STEP = 2**62  # "no step yet" for the first non-finite step (a minimum over processes)
NAMED = 8  # questions named in a divergence message
# Where a question comes from: "file:line" (TSV, JSONL) or "file entry N" (JSON arrays).
_PLACE = re.compile(r"(?P<path>.+?)(?::(?P<line>\d+)| entry (?P<entry>\d+))")


class Diverged(InvalidInput):
    """Training produced a non-finite loss, model or metric; the message says where and why."""


class DivergenceWatch:
    """Notes non-finite losses on the device; the checks raise :class:`Diverged`.

    ``questions``: the training split (to name a bad batch's questions); ``lr`` and ``run``
    (the run folder) go into the messages. ``saved`` says what ``last.pt`` holds, in words.
    """

    def __init__(
        self,
        questions: Questions,
        process: Process,
        device: torch.device,
        lr: float,
        run: Path,
    ):
        self.questions, self.process, self.lr, self.run = questions, process, lr, run
        # The first global step whose loss was not finite (NO_STEP: none), kept on the device so
        # that steps never wait for it; and which questions each step since the last look held.
        self.first_bad = torch.full((), NO_STEP, dtype=torch.int64, device=device)
        self.recent: dict[int, tuple[int, torch.Tensor]] = {}
        self.saved: str | None = None

    def note(self, loss: torch.Tensor, batch: Batch, state: LoopState) -> None:
        """Marks the step just done if its loss is not finite, on the device (no waiting for the
        GPU), and remembers on the host which questions it held."""
        step = state.global_step
        self.recent[step] = (state.epoch, batch.index)
        bad = ~torch.isfinite(loss) & (self.first_bad == NO_STEP)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check_losses(self, state: LoopState) -> None:
        """Raises Diverged if a step since the last look had a non-finite loss (synchronises;
        every process calls it at the same steps)."""
        first = self.first_bad
        if self.process.world > 1:
            first = first.clone()
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        step = int(first)
        if step == NO_STEP:
            self.recent.clear()
            return
        epoch, index = self.recent[step]
        questions = self.questions
        mine = [questions.rows[i].source or questions.keys[i] for i in index.tolist()]
        names = [name for share in self.process.gather(mine) for name in share]
        raise Diverged(
            f"training diverged: the loss is not finite (NaN or infinite) at step {step} (epoch "
            f"{epoch + 1}), on the batch of questions {question_names(names)}; lower --lr (now "
            f"{self.lr:g}) or check these questions' answers. {self.kept(state)}"
        )

    def check_model(self, model: MASN, state: LoopState) -> None:
        """Raises Diverged if a weight is not finite (synchronises)."""
        values = [v for v in model.state_dict().values() if v.is_floating_point()]
        if bool(torch.stack([v.isfinite().all() for v in values]).all()):
            return
        raise Diverged(
            f"training diverged: the model's weights are not finite after step "
            f"{state.global_step} (epoch {state.epoch + 1}); lower --lr (now "
            f"{self.lr:g}) or check the training answers. {self.kept(state)}"
        )

    def check_metrics(self, metrics: dict[str, Any], state: LoopState) -> None:
        """Raises Diverged if a validation figure is not finite."""
        if all(math.isfinite(value) for value in numbers(metrics)):
            return
        raise Diverged(
            f"training diverged: the validation metrics after epoch {state.epoch + 1} are "
            f"not finite; lower --lr (now {self.lr:g}) or check the training answers. "
            f"{self.kept(state)}"
        )

    def kept(self, state: LoopState) -> str:
        """Which checkpoints still hold a good state (nothing non-finite is ever written)."""
        kept = []
        if self.saved is not None:
            kept.append(f"{self.run / 'last.pt'} holds the state after {self.saved}")
        if state.best_epoch >= 0:
            kept.append(f"{self.run / 'best.pt'} the model of epoch {state.best_epoch + 1}")
        return ("; ".join(kept) if kept else "Nothing was saved") + "."


def question_names(names: list[str]) -> str:
    """A few question ids in one line: "file lines 3, 9" for rows of line-based files,
    "file entries 0, 5" for entries of JSON arrays, video keys as they are."""
    places: dict[tuple[str, str], list[str]] = {}
    others = []
    for name in names[:NAMED]:
        found = _PLACE.fullmatch(name)
        if found:
            unit = "line" if found["line"] else "entry"
            places.setdefault((found["path"], unit), []).append(found["line"] or found["entry"])
        else:
            others.append(name)
    plural = {"line": "lines", "entry": "entries"}
    parts = [
        f"{path} {plural[unit] if len(n) > 1 else unit} {', '.join(n)}"
        for (path, unit), n in places.items()
    ]
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(parts + others) + more


def numbers(values: dict[str, Any]) -> list[float]:
    """Every float in nested dicts of metrics (None, for an empty split, is left out)."""
    found: list[float] = []
    for value in values.values():
        if isinstance(value, dict):
            found += numbers(value)
        elif isinstance(value, float):
            found.append(value)
    return found
