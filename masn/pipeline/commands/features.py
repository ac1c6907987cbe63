"""Feature stores: list their videos, convert to and from the official MASN four files."""

from __future__ import annotations

import json
import logging

from masn.extract.settings import ExportSettings, ImportSettings, ListVideosSettings
from masn.pipeline.commands import Command

log = logging.getLogger(__name__)


def list_videos(settings: ListVideosSettings) -> int:
    from masn.extract.store.reader import FeatureStore

    count = 0
    with FeatureStore(settings.store) as store:
        for key, frames in store.frame_counts():
            shown = json.dumps(key) if any(c in key for c in "\t\n\r") else key
            print(f"{shown}\t{'damaged' if frames is None else frames}")
            count += 1
    log.info("%s: %d videos (key, sampled frames)", settings.store, count)
    return 0


def export(settings: ExportSettings) -> int:
    from masn.extract.store.official_transfer import export_official, read_key_map

    key_map = read_key_map(settings.key_map) if settings.key_map else None
    export_official(settings.features, settings.out, settings.dataset, key_map)
    return 0


def import_(settings: ImportSettings) -> int:
    from masn.extract.store.official_transfer import import_official, read_key_map

    key_map = read_key_map(settings.key_map) if settings.key_map else None
    import_official(
        settings.official, settings.dataset, settings.out, key_map, settings.skip_incomplete
    )
    return 0


def _positionals(first: str, second: str):
    """Earlier releases took the two paths as positionals: ``FIRST SECOND [flags]``."""

    def rewrite(args: list[str]) -> list[str] | None:
        if len(args) >= 2 and not args[0].startswith("-") and not args[1].startswith("-"):
            return [first, args[0], second, args[1], *args[2:]]
        return None

    return rewrite


ACTIONS = {
    "list": Command(ListVideosSettings, list_videos),
    "export-official": Command(ExportSettings, export, legacy=_positionals("--features", "--out")),
    "import-official": Command(ImportSettings, import_, legacy=_positionals("--official", "--out")),
}
