"""Published weights: downloaded, verified, validated and converted."""

from __future__ import annotations

from masn.pipeline.commands import Command
from masn.weights.settings import FetchSettings, ListSettings


def fetch(settings: FetchSettings) -> int:
    from masn.weights.commands import fetch_command

    return fetch_command(settings.names, settings.weights, settings.force)


def list_(settings: ListSettings) -> int:
    from masn.weights.commands import list_command

    return list_command(settings.weights)


ACTIONS = {
    "fetch": Command(FetchSettings, fetch, renamed={"--cache": "--weights"}),
    "list": Command(ListSettings, list_, renamed={"--cache": "--weights"}),
}
