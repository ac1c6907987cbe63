"""`masn train`: MASN on one task, with validation-based model selection and exact resume.

Defaults reproduce the paper: Adam at 1e-4, batch 32 (16 for Action and Transition), T = 20
sampled frames for TGIF-QA and 30 for MSVD/MSRVTT. Each epoch trains, evaluates the validation
split (and the test split with ``select_on="test"``, the paper's practice) and keeps the best
model in ``best.pt``; training stops after ``patience`` epochs without improvement. The test
split is reported at the selected epoch. ``last.pt`` holds the whole loop state (weights,
optimizer, random streams, position in the epoch), written atomically at every epoch end and
every ``save_every`` steps, so ``resume=True`` continues a killed run to the very same result.

Under torchrun every process reads its share of each batch (``StepSampler``) and DDP averages
gradients; losses are weighted so that W processes take exactly the steps of one process.

A loss that is not finite stops the run with :class:`Diverged`, naming the step, the epoch and
the questions of the batch. The step itself never waits for the GPU: it only notes, on the
device, the first step whose loss was not finite, and the loop looks at that note where it
synchronises anyway (every ``log_every`` steps, before a checkpoint, at the epoch end). A model
with non-finite weights or validation metric is never written, so ``best.pt`` and ``last.pt``
keep the last good state.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from masn.errors import InvalidInput
from masn.model import MASN, MASNConfig
from masn.pipeline.qa.datasets import Batch, QADataset, StepSampler
from masn.pipeline.qa.prepare import TaskData, feature_dims, open_source, prepare_task, word_vectors
from masn.pipeline.qa.tasks import infer_head, load_splits, task_spec
from masn.pipeline.qa.text import tokeniser
from masn.pipeline.training.baseline import answer_only_baseline
from masn.pipeline.training.checkpoint import load_checkpoint, model_payload, save_atomic
from masn.pipeline.training.distributed import Process
from masn.pipeline.training.evaluate import (
    Loading,
    evaluate_split,
    loader,
    metric_settings,
)
from masn.pipeline.training.metrics import selection_metric
from masn.pipeline.training.run_log import RunLog
from masn.pipeline.training.settings import FIXED_ON_RESUME, GLOVE_FILE, TrainSettings
from masn.runtime import autocast, default_workers, resolve_device
from masn.settings import to_dict
from masn.settings import write as write_settings
from masn.weights.cache import cache_dir

log = logging.getLogger(__name__)

_NONE = 2**62  # "no step yet" for the first non-finite step (a minimum over processes)
_NAMED = 8  # questions named in a divergence message


class Diverged(InvalidInput):
    """Training produced a non-finite loss, model or metric; the message says where and why."""


def adam(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """The paper's optimizer, with the fused kernel (CPU and CUDA).

    The default per-parameter implementation reads each parameter's step count back to the
    host (one synchronisation per tensor, ~170 per step for MASN); the fused kernel reads none
    and is several times faster on a CPU.
    """
    return torch.optim.Adam(parameters, lr=lr, fused=True)


@dataclass
class LoopState:
    """Where the loop is: the next epoch and step in it, the best result so far."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """One training run in one process (torchrun starts one per GPU)."""

    def __init__(self, config: TrainSettings, process: Process, device: torch.device):
        self.config, self.process, self.device = config, process, device
        spec = task_spec(config.task)
        self.annotations = Path(config.annotations or spec.annotations)
        rows = load_splits(spec, self.annotations, config.seed, config.val_fraction)
        if spec.name == "custom":
            spec = task_spec(spec.name, config.head or infer_head(rows["train"]))
            types = {row.qtype for split in rows.values() for row in split} - {""}
            spec = replace(spec, qtypes=tuple(sorted(types)))
        self.spec, self.rows = spec, rows
        self.run = Path(config.out or f"runs/{spec.name}")
        self.features = Path(config.features or spec.features)
        self.tokenizer = config.tokenizer or ("official" if config.mode == "reference" else "clean")
        self.precision = config.precision or ("bf16" if device.type == "cuda" else "fp32")
        self.loading = Loading(
            spec.frames if config.frames is None else config.frames,
            config.sampling,
            spec.batch_size if config.batch_size is None else config.batch_size,
            default_workers() if config.workers is None else config.workers,
        )
        last = self.run / "last.pt"
        if last.exists() and not config.resume:
            raise InvalidInput(
                f"{self.run} already holds a run ({last}); pass --resume to continue it or "
                "--out NEW_FOLDER to start another"
            )
        torch.manual_seed(config.seed + process.rank)
        source = open_source(spec, self.features)
        self.data: TaskData = prepare_task(
            spec,
            rows,
            self.annotations,
            source,
            self.tokenizer,
            config.out_of_set,
            config.answers_top,
        )
        self.model = self._build_model()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adam(trainable, config.lr)
        self.state = LoopState()
        if config.resume and last.exists():
            self._restore(load_checkpoint(last))
        elif config.resume:
            log.warning("no %s to resume from: starting a new run", last)
        self.wrapped = (
            DistributedDataParallel(
                self.model, device_ids=[device] if device.type == "cuda" else None
            )
            if process.world > 1
            else self.model
        )
        self.logs = RunLog(self.run) if process.main else None
        if process.main:
            write_settings(config, self.run / "config.yaml")
        # The first global step whose loss was not finite (_NONE: none), kept on the device so
        # that steps never wait for it; and which questions each step since the last look held.
        self._first_bad = torch.full((), _NONE, dtype=torch.int64, device=device)
        self._recent: dict[int, tuple[int, torch.Tensor]] = {}
        self._saved: str | None = None  # what last.pt holds, for the divergence message

    def _build_model(self) -> MASN:
        config, data = self.config, self.data
        train = data.splits["train"]
        if len(train) == 0:
            raise InvalidInput("no training question has features; see the warnings above")
        glove = None if config.glove == "random" else Path(config.glove or cache_dir() / GLOVE_FILE)
        cache = self.run / "word_vectors.npy"
        if self.process.main:
            vectors = word_vectors(data.vocabulary, glove, cache, config.seed)
        self.process.barrier()
        if not self.process.main:  # rank 0 filled the cache; the others read it
            vectors = word_vectors(data.vocabulary, glove, cache, config.seed)
        model_config = MASNConfig(
            vocab_size=len(data.vocabulary),
            task=self.spec.head,
            num_answers=max(len(data.answers or ()), 1),
            mode=config.mode,
            word_dim=vectors.shape[1],
            hidden=config.hidden,
            dropout=config.dropout,
            streams=config.streams,
            fusion=config.fusion,
            **feature_dims(data.source, train.keys[0]),
        )
        return MASN(model_config, vectors).to(self.device)

    # -- checkpoints -------------------------------------------------------------------------

    def _payload(self, metrics: dict[str, Any]) -> dict[str, Any]:
        settings = {
            **to_dict(self.config),
            "annotations": str(self.annotations),
            "features": str(self.features),
            "tokenizer": self.tokenizer,
            "frames": self.loading.frames,
            "batch_size": self.loading.batch_size,
        }
        info = {"train_config": settings, "epoch": self.state.epoch, "metrics": metrics}
        data = self.data
        return model_payload(
            self.model,
            self.spec,
            data.vocabulary,
            data.answers,
            self.tokenizer,
            self.loading.frames,
            self.config.sampling,
            info,
        )

    def _save_last(self) -> None:
        """The loop state; every rank's random streams are gathered (a collective call)."""
        streams = self.process.gather(_rng_state(self.device))
        if self.process.main:
            payload = self._payload({})
            payload["optimizer"] = self.optimizer.state_dict()
            payload["loop"] = asdict(self.state)
            payload["rng"] = streams
            save_atomic(payload, self.run / "last.pt")
        self._saved = _position(self.state)

    def _restore(self, payload: dict[str, Any]) -> None:
        saved = payload["info"]["train_config"]
        current = self._payload({})["info"]["train_config"]
        changed = [k for k in FIXED_ON_RESUME if saved.get(k) != current.get(k)]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise InvalidInput(f"cannot resume {self.run} with other settings ({diff})")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = LoopState(**payload["loop"])
        self._saved = _position(self.state)
        streams = payload["rng"]
        if len(streams) == self.process.world:
            _set_rng_state(streams[self.process.rank], self.device)
        else:
            log.warning(
                "resuming with %d processes instead of %d", self.process.world, len(streams)
            )
        log.info("resumed %s at epoch %d, step %d", self.run, self.state.epoch, self.state.step)

    # -- the loop ----------------------------------------------------------------------------

    def train_data(self) -> tuple[QADataset, StepSampler]:
        """The training split as a dataset, and this process's batches of it."""
        train, loading, process = self.data.splits["train"], self.loading, self.process
        sampler = StepSampler(
            len(train), loading.batch_size, self.config.seed, process.rank, process.world
        )
        return QADataset(train, self.data.source, loading.frames, loading.sampling), sampler

    def fit(self) -> dict[str, Any]:
        config, state = self.config, self.state
        dataset, sampler = self.train_data()
        started, samples = time.perf_counter(), 0
        try:
            while state.epoch < config.epochs and not state.stopped:
                samples += self._train_epoch(dataset, sampler)
                self._end_epoch()
            seconds = time.perf_counter() - started
            return self._report(samples / seconds if samples else None)
        finally:
            if self.logs is not None:
                self.logs.close()

    def _train_epoch(self, dataset: QADataset, sampler: StepSampler) -> int:
        state, process = self.state, self.process
        sampler.set_epoch(state.epoch, state.step)
        size, batch_size = len(dataset), self.loading.batch_size
        running, seen, samples = torch.zeros((), device=self.device), 0, 0
        self.model.train()
        bar = tqdm(
            loader(dataset, sampler, self.loading, self.device),
            total=sampler.steps(),
            initial=state.step,
            desc=f"epoch {state.epoch + 1}/{self.config.epochs}",
            disable=not process.main,
            leave=False,
        )
        for batch in bar:
            share = len(batch) * process.world / min(batch_size, size - state.step * batch_size)
            loss = self.train_step(batch, share)
            running += loss * len(batch)
            seen += len(batch)
            samples += len(batch) * process.world
            state.step += 1
            state.global_step += 1
            self._watch(loss, batch)
            if state.global_step % self.config.log_every == 0:
                self._check_losses()
                self._log_train(running / seen)
                running, seen = torch.zeros((), device=self.device), 0
            if self.config.save_every and state.global_step % self.config.save_every == 0:
                self._check_losses()
                self._check_model()
                self._save_last()
        self._check_losses()
        if seen:
            self._log_train(running / seen)
        return samples

    def train_step(self, batch: Batch, share: float = 1.0) -> torch.Tensor:
        """One optimisation step on this process's part of a batch; returns the detached loss.

        ``share``: this part's weight, (its questions x processes / the batch's questions), so
        that DDP's gradient average equals the gradient of the whole batch's mean loss.
        """
        batch = batch.to(self.device)
        with autocast(self.device, self.precision):
            output = self.wrapped(batch.video, batch.tokens, batch.lengths).output
        loss = self.model.loss(output.float(), batch.targets)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * share).backward()
        self.optimizer.step()
        return loss.detach()

    def _watch(self, loss: torch.Tensor, batch: Batch) -> None:
        """Notes the step if its loss is not finite, on the device (no waiting for the GPU), and
        remembers on the host which questions the step held."""
        step = self.state.global_step
        self._recent[step] = (self.state.epoch, batch.index)
        bad = ~torch.isfinite(loss) & (self._first_bad == _NONE)
        self._first_bad = torch.where(bad, step, self._first_bad)

    def _check_losses(self) -> None:
        """Raises Diverged if a step since the last look had a non-finite loss (synchronises;
        every process calls it at the same steps)."""
        first = self._first_bad
        if self.process.world > 1:
            first = first.clone()
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        step = int(first)
        if step == _NONE:
            self._recent.clear()
            return
        epoch, index = self._recent[step]
        questions = self.data.splits["train"]
        mine = [questions.rows[i].source or questions.keys[i] for i in index.tolist()]
        names = [name for share in self.process.gather(mine) for name in share]
        raise Diverged(
            f"training diverged: the loss is not finite (NaN or infinite) at step {step} (epoch "
            f"{epoch + 1}), on the batch of questions {_question_names(names)}; lower --lr (now "
            f"{self.config.lr:g}) or check these questions' answers. {self._kept()}"
        )

    def _check_model(self) -> None:
        """Raises Diverged if a weight is not finite (synchronises)."""
        values = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        if bool(torch.stack([v.isfinite().all() for v in values]).all()):
            return
        raise Diverged(
            f"training diverged: the model's weights are not finite after step "
            f"{self.state.global_step} (epoch {self.state.epoch + 1}); lower --lr (now "
            f"{self.config.lr:g}) or check the training answers. {self._kept()}"
        )

    def _check_metrics(self, metrics: dict[str, Any]) -> None:
        """Raises Diverged if a validation figure is not finite."""
        if all(math.isfinite(value) for value in _numbers(metrics)):
            return
        raise Diverged(
            f"training diverged: the validation metrics after epoch {self.state.epoch + 1} are "
            f"not finite; lower --lr (now {self.config.lr:g}) or check the training answers. "
            f"{self._kept()}"
        )

    def _kept(self) -> str:
        """Which checkpoints still hold a good state (nothing non-finite is ever written)."""
        kept = []
        if self._saved is not None:
            kept.append(f"{self.run / 'last.pt'} holds the state after {self._saved}")
        if self.state.best_epoch >= 0:
            kept.append(f"{self.run / 'best.pt'} the model of epoch {self.state.best_epoch + 1}")
        return ("; ".join(kept) if kept else "Nothing was saved") + "."

    def _log_train(self, loss: torch.Tensor) -> None:
        if self.logs is not None:
            value = float(loss)
            self.logs.event("train", self.state.global_step, epoch=self.state.epoch, loss=value)

    def _evaluate(self, split: str) -> dict[str, Any]:
        tally, _ = evaluate_split(
            self.model,
            self.data.splits[split],
            self.data.source,
            self.spec,
            self.loading,
            self.device,
            self.precision,
            self.process,
            label=split,
        )
        return tally.summary()

    def _end_epoch(self) -> None:
        config, state = self.config, self.state
        count = self.spec.head == "count"
        self._check_model()
        metrics = {"val": self._evaluate("val")}
        if config.select_on == "test":
            metrics["test"] = self._evaluate("test")
        self._check_metrics(metrics)
        value = selection_metric(metrics[config.select_on], count)
        improved = state.best is None or value > state.best
        epoch = state.epoch
        state.epoch, state.step = epoch + 1, 0
        state.history.append({"epoch": epoch + 1, **metrics})
        if improved:
            state.best, state.best_epoch, state.bad_epochs = value, epoch, 0
            if self.process.main:
                save_atomic(self._payload(metrics), self.run / "best.pt")
        else:
            state.bad_epochs += 1
            state.stopped = state.bad_epochs >= config.patience
        if self.logs is not None:
            self.logs.event("epoch", state.global_step, epoch=epoch + 1, best=improved, **metrics)
            shown = metrics[config.select_on]
            figure = f"MSE {shown['mse']}" if count else f"accuracy {shown['accuracy']} %"
            log.info(
                "epoch %d: %s %s%s",
                epoch + 1,
                config.select_on,
                figure,
                " (best)" if improved else "",
            )
            if state.stopped:
                log.info("no improvement for %d epochs: stopping", config.patience)
        self._save_last()

    def _report(self, samples_per_s: float | None) -> dict[str, Any]:
        """Val and test metrics of the selected model (best.pt), plus the baseline."""
        best = load_checkpoint(self.run / "best.pt")
        self.model.load_state_dict(best["state_dict"])
        data, spec = self.data, self.spec
        report: dict[str, Any] = {
            "task": spec.name,
            "run": str(self.run),
            "device": str(self.device),
            "processes": self.process.world,
            "selected_on": self.config.select_on,
            "selected_epoch": self.state.best_epoch + 1,
            "epochs_run": self.state.epoch,
            "stopped_early": self.state.stopped,
            "questions": {split: len(q) for split, q in data.splits.items()},
            "val": self._evaluate("val"),
            "test": self._evaluate("test"),
            "settings": metric_settings(spec, self.config.out_of_set),
            "train_samples_per_s": round(samples_per_s, 1) if samples_per_s else None,
        }
        if self.config.baseline and spec.head == "multiple_choice" and self.process.main:
            vectors = self.model.question.embedding.weight.detach().cpu()
            report["answer_only_baseline"] = answer_only_baseline(
                self.rows["train"],
                data.splits["test"],
                data.vocabulary,
                tokeniser(self.tokenizer),
                vectors,
                self.config.seed,
            )
        if self.process.main:
            (self.run / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            log.info("report: %s", self.run / "report.json")
        return report


def _position(state: LoopState) -> str:
    """Where the loop stands, in words: "epoch 2" (done) or "step 5 of epoch 3"."""
    if state.step:
        return f"step {state.step} of epoch {state.epoch + 1}"
    return f"epoch {state.epoch}"


def _question_names(names: list[str]) -> str:
    """A few question ids in one line: "file lines 3, 9" for sources, video keys as they are."""
    lines: dict[str, list[str]] = {}
    others = []
    for name in names[:_NAMED]:
        path, _, line = name.rpartition(":")
        if path and line.isdigit():
            lines.setdefault(path, []).append(line)
        else:
            others.append(name)
    parts = [f"{path} line{'s' * (len(n) > 1)} {', '.join(n)}" for path, n in lines.items()]
    more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    return ", ".join(parts + others) + more


def _numbers(values: dict[str, Any]) -> list[float]:
    """Every float in nested dicts of metrics (None, for an empty split, is left out)."""
    found: list[float] = []
    for value in values.values():
        if isinstance(value, dict):
            found += _numbers(value)
        elif isinstance(value, float):
            found.append(value)
    return found


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(config: TrainSettings) -> dict[str, Any]:
    """Trains (or resumes) one run; returns the final report (also in RUN/report.json)."""
    process = Process.from_env()
    device = resolve_device(config.device, process.local_rank)
    process.start(device)
    try:
        return Trainer(config, process, device).fit()
    finally:
        process.stop()
