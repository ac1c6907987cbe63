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

A non-finite loss, weight or validation metric stops the run with
:class:`~masn.pipeline.training.divergence.Diverged` (see ``divergence.py``); nothing non-finite
is ever written. :meth:`Trainer.loop_step` is one step of the loop with all its bookkeeping, so
that the training benchmark times the very loop ``masn train`` runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from masn import progress
from masn.atomic import removed_if_left_empty, writable_folder, write_text
from masn.datasets import task_spec
from masn.errors import InvalidInput, MissingInput
from masn.extract.store.reader import FeatureStore
from masn.locking import ExclusiveLock
from masn.model import MASN, MASNConfig
from masn.pipeline.qa.loading import StepSampler, loader
from masn.pipeline.qa.prepare import TaskData, feature_dims, open_source, prepare_task, word_vectors
from masn.pipeline.qa.questions import Batch, QADataset
from masn.pipeline.qa.resolve import (
    ResolvedTask,
    resolve_task,
    task_annotations,
    task_features,
    task_loading,
)
from masn.pipeline.qa.text import tokeniser
from masn.pipeline.training.baseline import answer_only_baseline
from masn.pipeline.training.checkpoint import load_checkpoint, model_payload, save_atomic
from masn.pipeline.training.distributed import Process
from masn.pipeline.training.divergence import DivergenceWatch
from masn.pipeline.training.evaluate import evaluate_split, metric_settings
from masn.pipeline.training.metrics import beside_paper, selection_metric
from masn.pipeline.training.resume import LoopState, position, rng_state, set_rng_state
from masn.pipeline.training.run_log import RunLog
from masn.pipeline.training.settings import BEST, FIXED_ON_RESUME, GLOVE_FILE, TrainSettings
from masn.pipeline.training.standardize import feature_statistics
from masn.runtime import autocast, default_precision, resolve_device
from masn.settings import to_dict
from masn.settings import write as write_settings
from masn.weights.cache import cache_dir

log = logging.getLogger(__name__)


def adam(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """The paper's optimizer, with the fused kernel (CPU and CUDA).

    The default per-parameter implementation reads each parameter's step count back to the
    host (one synchronisation per tensor, ~170 per step for MASN); the fused kernel reads none
    and is several times faster on a CPU.
    """
    return torch.optim.Adam(parameters, lr=lr, fused=True)


class Trainer:
    """One training run in one process (torchrun starts one per GPU)."""

    def __init__(
        self, config: TrainSettings, task: ResolvedTask, process: Process, device: torch.device
    ):
        self.config, self.process, self.device = config, process, device
        self.spec, self.rows, self.loading = task.spec, task.rows, task.loading
        self.annotations, self.features = task.annotations, task.features
        self.run = run_folder(config)
        self.tokenizer = default_tokenizer(config)
        self.precision = config.precision or default_precision(device)
        last = self.run / "last.pt"
        if last.exists() and not config.resume:
            raise InvalidInput(
                f"{self.run} already holds a run ({last}); pass --resume to continue it or "
                "--out NEW_FOLDER to start another"
            )
        torch.manual_seed(config.seed + process.rank)
        source = open_source(self.spec, self.features)
        self.data: TaskData = prepare_task(
            self.spec,
            self.rows,
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
        self.watch = DivergenceWatch(
            self.data.splits["train"], process, device, config.lr, self.run
        )
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
        self.logs = RunLog(self.run, self.state.global_step) if process.main else None
        if process.main:
            decided = {"annotations": self.annotations, "features": self.features, "out": self.run}
            decided |= {"sampling": self.loading.sampling}
            write_settings(replace(config, **decided), self.run / "config.yaml")
        # The mean training loss since the last log point, summed on the device.
        self._loss_sum, self._loss_count = torch.zeros((), device=device), 0

    def _build_model(self) -> MASN:
        config, data = self.config, self.data
        train = data.splits["train"]
        if len(train) == 0:
            raise InvalidInput("no training question has features; see the warnings above")
        glove = None if config.glove == "random" else Path(word_vectors_source(config))
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
            standardize=config.standardize,
            **feature_dims(data.source),
        )
        model = MASN(model_config, vectors)
        if model.scaling is not None:
            statistics = feature_statistics(train, data.source, self.loading, config.seed)
            model.scaling.set_statistics(statistics)
        return model.to(self.device)

    # -- checkpoints -------------------------------------------------------------------------

    def _payload(self, metrics: dict[str, Any]) -> dict[str, Any]:
        settings = {
            **to_dict(self.config),
            "annotations": str(self.annotations),
            "features": str(self.features),
            "out": str(self.run),
            **self._decided(),
            "tokenizer": self.tokenizer,
            "frames": self.loading.frames,
            "sampling": self.loading.sampling,
            "batch_size": self.loading.batch_size,
        }
        info = {"train_config": settings, "epoch": self.state.epoch, "metrics": metrics}
        data = self.data
        if isinstance(data.source, FeatureStore):  # how the features were made, for answering
            provenance = data.source.provenance
            info["features"] = {"config": provenance.config, "weights": provenance.weights}
        return model_payload(
            self.model,
            self.spec,
            data.vocabulary,
            data.answers,
            self.tokenizer,
            self.loading.frames,
            self.loading.sampling,
            info,
        )

    def _save_last(self) -> None:
        """The loop state; every rank's random streams are gathered (a collective call)."""
        streams = self.process.gather(rng_state(self.device))
        if self.process.main:
            payload = self._payload({})
            payload["optimizer"] = self.optimizer.state_dict()
            payload["loop"] = asdict(self.state)
            payload["rng"] = streams
            save_atomic(payload, self.run / "last.pt")
        self.watch.saved = position(self.state)

    def _decided(self) -> dict[str, Any]:
        """The settings whose None the run decides (beyond the task's): word vectors, head and
        answer classes, as recorded and compared on resume."""
        answers_top = self.config.answers_top
        if answers_top is None and self.spec.head == "open_ended":
            answers_top = self.spec.answer_top
        glove = word_vectors_source(self.config)
        return {"glove": glove, "head": self.spec.head, "answers_top": answers_top}

    def _restore(self, payload: dict[str, Any]) -> None:
        # Settings added since the run started read as their defaults, and those the run
        # decides (recorded as None before they were recorded decided) as decided now.
        saved = {**to_dict(TrainSettings()), **payload["info"]["train_config"]}
        saved |= {name: value for name, value in self._decided().items() if saved[name] is None}
        current = self._payload({})["info"]["train_config"]
        changed = [k for k in FIXED_ON_RESUME if saved.get(k) != current.get(k)]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise InvalidInput(f"cannot resume {self.run} with other settings ({diff})")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = LoopState(**payload["loop"])
        self.watch.saved = position(self.state)
        streams = payload["rng"]
        if len(streams) == self.process.world:
            set_rng_state(streams[self.process.rank], self.device)
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
        samples = 0
        self.model.train()
        bar = progress.bar(
            loader(dataset, sampler, self.loading, self.device),
            total=sampler.steps(),
            initial=state.step,
            desc=f"epoch {state.epoch + 1}/{self.config.epochs}",
            disable=not process.main,
            leave=False,
        )
        for batch in bar:
            self.loop_step(batch, len(batch) * process.world / sampler.questions(state.step))
            samples += len(batch) * process.world
        self.watch.check_losses(state)
        self._log_loss()
        return samples

    def loop_step(self, batch: Batch, share: float = 1.0) -> torch.Tensor:
        """One step of the training loop: :meth:`train_step`, the divergence note, the mean loss
        logged every ``log_every`` steps and ``last.pt`` written every ``save_every`` steps;
        returns the step's detached loss."""
        state, config = self.state, self.config
        loss = self.train_step(batch, share)
        self._loss_sum += loss * len(batch)
        self._loss_count += len(batch)
        state.step += 1
        state.global_step += 1
        self.watch.note(loss, batch, state)
        if state.global_step % config.log_every == 0:
            self.watch.check_losses(state)
            self._log_loss()
        if config.save_every and state.global_step % config.save_every == 0:
            self.watch.check_losses(state)
            self.watch.check_model(self.model, state)
            self._save_last()
        return loss

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

    def _log_loss(self) -> None:
        """Logs the mean loss of the steps since the last log point, if any, and starts anew."""
        if self._loss_count and self.logs is not None:
            loss = float(self._loss_sum / self._loss_count)
            self.logs.event("train", self.state.global_step, epoch=self.state.epoch, loss=loss)
        self._loss_sum, self._loss_count = torch.zeros((), device=self.device), 0

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
        self.watch.check_model(self.model, state)
        metrics = {"val": self._evaluate("val")}
        if config.select_on == "test":
            metrics["test"] = self._evaluate("test")
        self.watch.check_metrics(metrics, state)
        value = selection_metric(metrics[config.select_on], count)
        improved = state.best is None or value > state.best
        epoch = state.epoch
        state.epoch, state.step = epoch + 1, 0
        state.history.append({"epoch": epoch + 1, **metrics})
        if improved:
            state.best, state.best_epoch, state.bad_epochs = value, epoch, 0
            if self.process.main:
                save_atomic(self._payload(metrics), self.run / BEST)
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
        best = load_checkpoint(self.run / BEST)
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
            # Videos whose questions were left out, named in the log (questions.attach_features).
            "damaged_videos": len({key for q in data.splits.values() for key in q.damaged}),
            "val": self._evaluate("val"),
            "test": self._evaluate("test"),
            "settings": metric_settings(spec, self.config.out_of_set),
            "train_samples_per_s": round(samples_per_s, 1) if samples_per_s else None,
        }
        paper = beside_paper(spec, report["test"])
        if paper is not None:
            report["paper"] = paper
        if self.config.baseline and spec.head == "multiple_choice" and self.process.main:
            report["answer_only_baseline"] = answer_only_baseline(
                self.model,
                self.rows["train"],
                data.splits["test"],
                data.vocabulary,
                tokeniser(self.tokenizer),
                self.config.seed,
            )
        if self.process.main:
            write_text(self.run / "report.json", json.dumps(report, indent=2) + "\n")
            log.info("report: %s", self.run / "report.json")
        return report


def training_task(config: TrainSettings) -> ResolvedTask:
    """The task of ``config`` with the task's defaults where the settings leave them open."""
    return resolve_task(
        task_spec(config.task, config.head),
        seed=config.seed,
        val_fraction=config.val_fraction,
        annotations=config.annotations,
        features=config.features,
        frames=config.frames,
        sampling=config.sampling,
        batch_size=config.batch_size,
        workers=config.workers,
    )


def default_tokenizer(config: TrainSettings) -> str:
    """--tokenizer, else the official tokeniser in reference mode and the clean one otherwise."""
    return config.tokenizer or ("official" if config.mode == "reference" else "clean")


def word_vectors_source(config: TrainSettings) -> str:
    """--glove: a GloVe file, "random", or by default the paper's file in the weights cache."""
    return config.glove or str(cache_dir() / GLOVE_FILE)


def resolved_settings(config: TrainSettings) -> TrainSettings:
    """``config`` with every default decided as ``masn train`` decides it (``--print-config``
    shows it): the task's questions, features, frames, sampling, batch size and workers, the run
    folder, word vectors, tokeniser, head, answer classes and this machine's precision. The
    question files are read where they exist (a collection of your own takes its head from its
    rows); elsewhere the task's defaults are shown."""
    try:
        task = training_task(config)
        spec, annotations, features, loading = (
            task.spec,
            task.annotations,
            task.features,
            task.loading,
        )
    except MissingInput:
        spec = task_spec(config.task, config.head)
        annotations = task_annotations(spec, config.annotations)
        features = task_features(spec, config.features)
        loading = task_loading(
            spec, config.frames, config.sampling, config.batch_size, config.workers
        )
    answers_top = config.answers_top
    if answers_top is None and spec.head == "open_ended":
        answers_top = spec.answer_top
    return replace(
        config,
        annotations=annotations,
        features=features,
        out=run_folder(config),
        glove=word_vectors_source(config),
        head=spec.head,
        tokenizer=default_tokenizer(config),
        frames=loading.frames,
        sampling=loading.sampling,
        batch_size=loading.batch_size,
        answers_top=answers_top,
        workers=loading.workers,
        precision=config.precision or default_precision(resolve_device(config.device)),
    )


def run_folder(config: TrainSettings) -> Path:
    """The run folder of ``config`` (default runs/<task>), absolute: the checkpoints record
    paths that work from any folder."""
    return Path(config.out or f"runs/{config.task}").resolve()


@contextlib.contextmanager
def holding(run: Path) -> Iterator[None]:
    """The run folder, checked writable and locked for one training run at a time: a second
    ``masn train`` into it is refused naming the first one's pid and host. A folder this call
    created is removed again if the run leaves nothing in it (a refused start)."""
    with removed_if_left_empty(run):
        writable_folder(run, "masn train cannot write its run folder", "choose a writable --out")
        with ExclusiveLock(
            run / ".lock",
            f"training into {run}",
            "wait for it to end or choose another --out (--resume continues a run that ended)",
        ):
            yield


def train(config: TrainSettings) -> dict[str, Any]:
    """Trains (or resumes) one run; returns the final report (also in RUN/report.json). The
    run folder is locked while it trains (by the main process under torchrun)."""
    process = Process.from_env()
    device = resolve_device(config.device, process.local_rank)
    process.start(device)
    try:
        with holding(run_folder(config)) if process.main else contextlib.nullcontext():
            return Trainer(config, training_task(config), process, device).fit()
    finally:
        process.stop()
