"""How QA batches are read: which questions each step holds, and the loader that reads them.

Training steps come from :class:`StepSampler` (the same batches for any number of processes),
evaluation batches from :func:`evaluation_batches`; :func:`loader` reads either through
DataLoader workers into pinned :class:`~masn.pipeline.qa.questions.Batch` es.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from masn.datasets.spec import Sampling
from masn.errors import InvalidInput
from masn.pipeline.qa.questions import Collate, QADataset
from masn.runtime import data_loader, share_cpu


@dataclass(frozen=True)
class Loading:
    """How batches are read: frames per video, sampling, batch size, worker processes."""

    frames: int
    sampling: Sampling
    batch_size: int
    workers: int


def loader(dataset: QADataset, batches: Any, loading: Loading, device: torch.device) -> DataLoader:
    """Batches from worker processes, pinned for the GPU; global RNG untouched (resumability).
    On the CPU the workers and the model's threads share the cores (:func:`share_cpu`)."""
    if device.type == "cpu":
        share_cpu(loading.workers)
    return data_loader(
        dataset,
        device,
        loading.workers,
        prefetch=4,
        batch_sampler=batches,
        collate_fn=Collate(dataset.questions),
    )


class StepSampler(Sampler[list[int]]):
    """Training batches of question indices, identical for any number of processes.

    Each step takes the next ``batch_size`` questions of an order fixed by (seed, epoch) and
    gives rank r every world-th of them, so W processes together see exactly the batches of
    one process. A last batch too small to give every rank a question is dropped. ``start``
    skips the steps already done (resuming inside an epoch).
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        if batch_size < world:
            raise InvalidInput(f"batch size {batch_size} is smaller than the {world} processes")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def steps(self) -> int:
        """Steps per epoch (the same on every rank)."""
        full, rest = divmod(self.size, self.batch_size)
        return full + int(rest >= self.world)

    def questions(self, step: int) -> int:
        """Questions of step ``step`` over all processes (fewer than a batch at the epoch end)."""
        return min(self.batch_size, self.size - step * self.batch_size)

    def __len__(self) -> int:
        return max(0, self.steps() - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        for step in range(self.start, self.steps()):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield batch[self.rank :: self.world]


def evaluation_batches(
    size: int, batch_size: int, rank: int = 0, world: int = 1
) -> list[list[int]]:
    """This rank's share of an evaluation split (every world-th question), in batches."""
    mine = list(range(rank, size, world))
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
