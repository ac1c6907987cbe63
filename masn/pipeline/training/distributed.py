"""This process's place in a torchrun training run, and the few collectives training needs."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from masn.extract.run.sharding import Shard


@dataclass(frozen=True)
class Process(Shard):
    """A training process: rank of world (1 when not under torchrun); local_rank picks the GPU.

    ``Process.from_env()`` reads torchrun's (or SLURM's) variables like an extraction shard.
    """

    @property
    def main(self) -> bool:
        """Rank 0 writes files and logs progress."""
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Joins the process group: NCCL on GPUs, gloo on CPUs (nothing for one process)."""
        if self.world == 1 or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=self.rank,
            world_size=self.world,
            timeout=datetime.timedelta(minutes=30),
            device_id=device if device.type == "cuda" else None,
        )

    def stop(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (a list of one in a single process)."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values
