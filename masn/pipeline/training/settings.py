"""The settings of `masn train`, `masn evaluate` and `masn model import-official`, torch-free.

The command line builds its flags, help and defaults from these dataclasses; config files load
into them (``masn.settings``); a run folder keeps the settings that made it (``config.yaml``).
None means "the task's default" (its dataset module's ``TaskSpec``). Numbers out of range
are refused with the flag's name, never replaced by a default.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from masn.datasets import PublishedTask, TaskName
from masn.datasets.spec import Sampling
from masn.errors import InvalidInput
from masn.model.config import Fusion, Mode, Streams, Task
from masn.pipeline.qa.answer_set import OutOfSet
from masn.runtime import Precision, check_device
from masn.settings import Checked, Decided

GLOVE_FILE = "glove.42B.300d.zip"
"""The paper's word vectors, looked up in the weights cache by default."""
BEST = "best.pt"
"""The selected model of a run folder (``masn train`` writes it)."""

# Settings that must not change when a run resumes: they shape the data, the model or the loop.
DATA_SETTINGS = ("task", "head", "tokenizer", "frames", "sampling", "val_fraction", "glove")
MODEL_SETTINGS = (
    "mode",
    "hidden",
    "dropout",
    "streams",
    "fusion",
    "standardize",
    "out_of_set",
    "answers_top",
)
LOOP_SETTINGS = ("batch_size", "lr", "seed", "select_on")
FIXED_ON_RESUME = DATA_SETTINGS + MODEL_SETTINGS + LOOP_SETTINGS


@dataclass(frozen=True)
class TrainSettings(Checked):
    """Train MASN on a task (torchrun for several GPUs).

    The run folder gets best.pt, last.pt (resumable), metrics.jsonl, tensorboard/, report.json
    and config.yaml. Defaults reproduce the paper (Adam 1e-4, batch 32 / 16 for Action and
    Transition, T 20 / 30).
    """

    task: TaskName = "frameqa"
    """TGIF-QA count / action / transition / frameqa, msvd, msrvtt, nextqa, or custom (your
    JSONL)."""
    annotations: Decided[Path | None] = None
    """Folder of the QA files (default data/<dataset>)."""
    features: Decided[Path | None] = None
    """Feature store .h5, or a folder of the official four files (default features/<dataset>.h5)."""
    out: Decided[Path | None] = None
    """Run folder (default runs/<task>)."""
    glove: Decided[str | None] = None
    """GloVe .txt/.zip (default: glove.42B.300d.zip in the weights cache); 'random' for seeded
    random vectors (smoke runs)."""
    head: Decided[Task | None] = None
    """Custom collections: the answer type (default: from the rows: candidates -> multiple
    choice, integer answers -> count, else open-ended)."""
    mode: Mode = "fixed"
    """fixed (defects of the official code repaired) or reference (the official network)."""
    tokenizer: Decided[Literal["clean", "official"] | None] = None
    """Default: official in reference mode, clean otherwise."""
    frames: Decided[int | None] = None
    """T: sampled frames per video (default: the task's, 20 for TGIF-QA and 30 for the others)."""
    sampling: Decided[Sampling | None] = None
    """Longer videos: their first T sampled frames (the official code) or T evenly spread
    (default: the task's, uniform for NExT-QA, first for the others)."""
    batch_size: Decided[int | None] = None
    """Questions per step (default: the task's, 32, or 16 for multiple choice)."""
    lr: float = 1e-4
    """Adam learning rate."""
    epochs: int = 100
    """At most this many epochs."""
    patience: int = 10
    """Stop after this many epochs without improvement."""
    select_on: Literal["val", "test"] = "val"
    """Model selection split; 'test' mimics the paper."""
    val_fraction: float = 0.1
    """Share of the training videos held out for validation where no val file exists."""
    seed: int = 999
    """Seed of the validation split, initialisation, batches and dropout."""
    out_of_set: OutOfSet = "wrong"
    """Open-ended answers outside the classes: dropped from training and wrong in evaluation,
    or class 1 as in the official code ('reference')."""
    answers_top: Decided[int | None] = None
    """Answer classes (default 1000 MSVD, 4000 MSRVTT)."""
    hidden: int = 512
    """Hidden width of every module."""
    dropout: float = 0.3
    """Dropout probability."""
    streams: Streams = "both"
    """Table 3 ablations: both modules, or the appearance / motion module alone."""
    fusion: Fusion = "full"
    """Table 3 ablations: all three fusion attentions, dual, single, or none."""
    standardize: bool = False
    """Standardise each feature dimension with its mean and standard deviation over the
    training videos (kept in the checkpoint, applied by evaluate and answer too); for features
    that differ little between videos, e.g. from random networks. Off: the paper's inputs."""
    workers: Decided[int | None] = None
    """Data loading processes (default: the CPU cores of this rank's share of the node)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    precision: Decided[Precision | None] = None
    """Default: bf16 autocast on GPUs, fp32 on CPUs."""
    save_every: int = 0
    """Steps between mid-epoch checkpoints (0: at epoch ends only)."""
    log_every: int = 50
    """Steps between training-loss log lines."""
    baseline: bool = True
    """Multiple choice: also train and report the answer-only baseline."""
    resume: bool = False
    """Continue the run in --out from its last.pt."""

    def check(self) -> None:
        super().check()
        check_device(self.device)
        _check_ranges(self)


def _check_ranges(settings: TrainSettings) -> None:
    """Numbers out of range are refused, never replaced by a default (flag names as the CLI's)."""
    lr = settings.lr
    rules = [
        ("frames", settings.frames is None or settings.frames >= 1, "at least 1 (or left out)"),
        ("batch_size", settings.batch_size is None or settings.batch_size >= 1, "at least 1"),
        ("workers", settings.workers is None or settings.workers >= 0, "at least 0"),
        ("lr", math.isfinite(lr) and lr > 0, "a finite number above 0, e.g. 1e-4"),
        ("epochs", settings.epochs >= 1, "at least 1"),
        ("patience", settings.patience >= 1, "at least 1"),
        ("val_fraction", 0 < settings.val_fraction < 1, "between 0 and 1, e.g. 0.1"),
        ("hidden", settings.hidden >= 2 and settings.hidden % 2 == 0, "an even number >= 2"),
        ("dropout", 0 <= settings.dropout < 1, "in [0, 1)"),
        ("save_every", settings.save_every >= 0, "at least 0 (0: at epoch ends only)"),
        ("log_every", settings.log_every >= 1, "at least 1"),
        ("answers_top", settings.answers_top is None or settings.answers_top >= 2, "at least 2"),
    ]
    for name, valid, wanted in rules:
        if not valid:
            flag = "--" + name.replace("_", "-")
            raise InvalidInput(f"{flag} must be {wanted}, got {getattr(settings, name)!r}")


def train_defaults() -> dict[str, Any]:
    """``masn train``'s default for each setting that has one (None for the required ones)."""
    return {
        field.name: None if field.default is MISSING else field.default
        for field in fields(TrainSettings)
    }


@dataclass(frozen=True)
class EvaluateSettings(Checked):
    """Metrics of a checkpoint on a split, per question type, with every question's predictions.

    Writes metrics.json, predictions.jsonl and config.yaml (default: beside the checkpoint, in
    evaluate-SPLIT/). Annotations and features default to the training run's.
    """

    checkpoint: Path
    """A run folder of masn train (its best.pt is read) or a checkpoint file."""
    split: Literal["train", "val", "test"] = "test"
    """The split to evaluate."""
    annotations: Decided[Path | None] = None
    """Folder of the QA files (default: the training run's)."""
    features: Decided[Path | None] = None
    """Feature store or official folder (default: the training run's)."""
    out: Decided[Path | None] = None
    """Output folder (default: RUN/evaluate-SPLIT)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    batch_size: Decided[int | None] = None
    """Questions per batch (default: the task's)."""
    workers: Decided[int | None] = None
    """Data loading processes (default: the CPU cores of this rank's share of the node)."""
    precision: Decided[Precision | None] = None
    """Default: fp32."""
    baseline: bool = True
    """Also report a baseline without the video: the majority answer (open-ended), the mean
    count (count), the answer-only model (multiple choice)."""
    seed: Decided[int | None] = None
    """Seed of the validation split and the baseline (default: the training run's)."""

    def check(self) -> None:
        super().check()
        check_device(self.device)
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInput(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise InvalidInput(f"--workers must be at least 0, got {self.workers}")


@dataclass(frozen=True)
class ImportOfficialModelSettings(Checked):
    """Turn an official MASN checkpoint and its vocabulary pickles into a masn checkpoint.

    The result answers and evaluates like a model trained here (masn evaluate, masn answer,
    masn.load), in reference mode with the official tokeniser. The vocabulary folder is the
    official --vc_dir: word_to_index_<Task>.pkl, index_to_word_<Task>.pkl, and for open-ended
    tasks ans_to_index_<Task>.pkl and index_to_ans_<Task>.pkl (vocab_embedding_<Task>.pkl, if
    there, is checked against the checkpoint); MSVD/MSRVTT without the _<Task> suffix.
    """

    checkpoint: Path
    """The official checkpoint (e.g. FrameQA_59.73.pth: a pickled module or a state dict)."""
    vocabulary: Path
    """The official vocabulary folder (--vc_dir) of the task."""
    task: PublishedTask
    """The task the checkpoint was trained on."""
    out: Path
    """The masn checkpoint to write (e.g. runs/official-frameqa/best.pt)."""
