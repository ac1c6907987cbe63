"""`masn extract`: list a dataset's videos, take this rank's share, extract, merge the shards."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from masn.errors import MissingInput
from masn.extract.networks.feature_networks import load_networks
from masn.extract.run.runner import extract_features
from masn.extract.run.sharding import Shard, merge_when_all_done, shard_paths
from masn.extract.settings import ExtractSettings
from masn.extract.store.merge import merge_stores
from masn.extract.store.writer import check_output
from masn.extract.video.sources import list_videos
from masn.runtime import default_workers, resolve_device
from masn.settings import dump as dump_settings
from masn.weights.cache import cache_dir

log = logging.getLogger(__name__)


def run_extraction(settings: ExtractSettings) -> int:
    """`masn extract`: extracts ``settings.videos`` into the store ``settings.out`` (or only
    merges ``settings.merge``); returns the process exit code. The store records ``settings``.

    Exit 0 when at least one video was stored (or nothing was left to do), 1 otherwise. The
    output paths, the device and the videos folder are checked before any work (``UserError``:
    a read-only output folder, an output that is a folder or a special file, an absent GPU, a
    folder without videos); a missing output folder is created.
    """
    out = Path(settings.out)
    if settings.merge:
        merge_stores(settings.merge, out)
        return 0
    shard = Shard.from_env()
    for path in {out, *shard_paths(out, shard.world)}:
        check_output(path)
    device = resolve_device(settings.run.device, shard.local_rank)
    mapping = Path(settings.mapping) if settings.mapping else None
    sources = list_videos(Path(settings.videos), settings.dataset, mapping)
    if not sources:
        raise MissingInput(
            f"no {settings.dataset} videos found under {settings.videos}: check --videos (and "
            "--dataset; 'folder' lists every video file)"
        )
    mine = shard.select(sources)
    if shard.world > 1:
        log.info("rank %d of %d: %d of %d videos", shard.rank, shard.world, len(mine), len(sources))
    config = settings.features
    networks = load_networks(config, settings.weights, settings.random_weights, settings.seed)
    options = replace(settings.run, device=str(device))
    store = shard.store_path(out)
    summary = extract_features(mine, store, config, networks, options, dump_settings(settings))
    rate = summary.sampled_frames / summary.seconds if summary.seconds else 0.0
    log.info(
        "%s: stored %d videos (%d sampled frames, %.1f frames/s), %d already there, %d failed%s",
        store,
        summary.stored,
        summary.sampled_frames,
        rate,
        summary.skipped,
        summary.failed,
        f" (reasons in {summary.failures})" if summary.failed else "",
    )
    merge_when_all_done(shard, out)
    return 0 if summary.ok else 1


def resolved_settings(settings: ExtractSettings) -> ExtractSettings:
    """``settings`` with the defaults ``masn extract`` decides (``--print-config`` shows them):
    the weights cache for the published weights, and the decode workers of this rank's share
    of the node (a run uses at most one per video)."""
    weights = settings.weights
    if weights is None and not settings.random_weights:
        weights = cache_dir()
    workers = default_workers() if settings.run.workers is None else settings.run.workers
    return replace(settings, weights=weights, run=replace(settings.run, workers=workers))
