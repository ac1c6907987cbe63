"""Scale-out: each rank (torchrun, SLURM) extracts a deterministic share into its own shard."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from masn.errors import InvalidInput
from masn.extract.store.merge import merge_stores
from masn.extract.video.sources import VideoSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: ``rank`` of ``world`` (``local_rank`` picks its GPU)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Shard:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else SLURM's task variables, else 0 of 1."""
        for rank, world, local in (
            ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
            ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
        ):
            if rank in os.environ and world in os.environ:
                shard = cls(
                    int(os.environ[rank]), int(os.environ[world]), int(os.environ.get(local, 0))
                )
                if not 0 <= shard.rank < shard.world:
                    raise InvalidInput(f"{rank}={shard.rank} is outside {world}={shard.world}")
                return shard
        return cls()

    def select(self, sources: Sequence[VideoSource]) -> list[VideoSource]:
        """Every ``world``-th video by key, starting at ``rank``: the same split on every node."""
        return sorted(sources, key=lambda s: s.key)[self.rank :: self.world]

    def store_path(self, out: Path) -> Path:
        return shard_paths(out, self.world)[self.rank]


def shard_paths(out: Path, world: int) -> list[Path]:
    """The shard stores of a run (the store itself when there is one rank)."""
    if world == 1:
        return [out]
    name = f"{out.stem}.shard-{{:04d}}-of-{world:04d}{out.suffix}"
    return [out.with_name(name.format(rank)) for rank in range(world)]


def can_synchronise() -> bool:
    """Whether ranks can meet (torchrun sets MASTER_ADDR/PORT); SLURM alone cannot."""
    return "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ


def merge_when_all_done(shard: Shard, out: Path, timeout_hours: float = 72.0) -> bool:
    """Waits for every rank (gloo barrier), then rank 0 merges the shards into ``out``.

    Returns whether this process merged. Without torchrun's rendezvous variables the shards
    are left for ``masn extract --merge``.
    """
    if shard.world == 1:
        return False
    if not can_synchronise():
        log.info(
            "rank %d wrote %s; when all %d ranks are done run: masn extract --merge %s --out %s",
            shard.rank,
            shard.store_path(out),
            shard.world,
            " ".join(str(p) for p in shard_paths(out, shard.world)),
            out,
        )
        return False
    timeout = datetime.timedelta(hours=timeout_hours)
    dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world, timeout=timeout)
    try:
        dist.barrier()
        if shard.rank == 0:
            merge_stores(shard_paths(out, shard.world), out)
            log.info("merged %d shards into %s", shard.world, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return shard.rank == 0
