"""``merge_stores``: joins the consolidated shard stores of a sharded run into one store."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np

from masn.errors import InvalidInput
from masn.extract.store.reader import FeatureStore
from masn.extract.store.store_file import new_store
from masn.extract.store.writer import check_output

log = logging.getLogger(__name__)


def merge_stores(
    shard_paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str]
) -> Path:
    """Joins consolidated shard stores into ``out_path`` (atomically replaced); returns it.

    Shards must share config, weights and feature dtype, so per-rank values must stay out of
    the extraction config. A key in several shards must have identical arrays there.
    """
    out_path = Path(out_path)
    if not shard_paths:
        raise InvalidInput("merge_stores needs at least one shard")
    check_output(out_path)
    shards = [FeatureStore(path) for path in shard_paths]
    try:
        if any(out_path.resolve() == shard.path.resolve() for shard in shards):
            raise InvalidInput(f"{out_path} is one of the shards; merge into a new path")
        first = shards[0]
        for shard in shards[1:]:
            found = shard.provenance.mismatch(first.provenance)
            if shard.feature_dtype != first.feature_dtype:
                found.append(f"feature dtype ({shard.feature_dtype}, {first.feature_dtype})")
            if found:
                raise InvalidInput(
                    f"shard {shard.path} differs from {first.path} in {' and '.join(found)}; "
                    "shards must come from one extraction configuration"
                )
        created = min(shard.provenance.created for shard in shards)
        provenance = replace(first.provenance, created=created)
        with new_store(out_path, provenance, first.feature_dtype) as videos:
            origin: dict[str, Path] = {}
            for shard in shards:
                source = shard.videos_group()
                for name, group in source.items():
                    if name not in videos:
                        source.file.copy(group, videos, name)
                        origin[name] = shard.path
                    elif not _same_arrays(videos[name], group):
                        raise InvalidInput(
                            f"video {unquote(name)!r} differs between {origin[name]} and "
                            f"{shard.path}; re-extract it or drop it from one shard"
                        )
            total = len(videos)
    finally:
        for shard in shards:
            shard.close()
    log.info("merged %d shards into %s: %d videos", len(shards), out_path, total)
    return out_path


def _same_arrays(a: h5py.Group, b: h5py.Group) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[name][()], b[name][()]) for name in a)
