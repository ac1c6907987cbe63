"""Fixtures of the weights tests: the local HTTP server, fast retries, synthetic published
files and their conversions, and swapping a format's validator for one test."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from masn.extract.networks.detector import Detector
from masn.weights import download, validate
from masn.weights.formats.registry import get_format
from tests.weights.http_server import Server
from tests.weights.published import Published


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.setattr(download, "RETRIES", 2)


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Published:
    """One synthetic file per format, written on first use: (path, the source tensors)."""
    return Published(tmp_path_factory.mktemp("published"))


class Converted:
    """Each format's synthetic file converted by its registered converter, on first use."""

    def __init__(self, files: Published) -> None:
        self.files = files
        self._states: dict[str, dict[str, torch.Tensor]] = {}

    def __getitem__(self, fmt: str) -> dict[str, torch.Tensor]:
        if fmt not in self._states:
            self._states[fmt] = get_format(fmt).converter(self.files[fmt][0])
        return self._states[fmt]


@pytest.fixture(scope="session")
def converted(files: Published) -> Converted:
    return Converted(files)


@pytest.fixture(scope="session")
def detector() -> Detector:
    return Detector()


Validator = Callable[[Path], object]


@pytest.fixture
def swap_validator(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Validator], Validator]:
    """``swap_validator(format, function)`` makes validation use ``function`` for that format
    during the test; returns the registered validator."""

    def swap(name: str, validator: Validator) -> Validator:
        real = get_format

        def lookup(wanted: str):
            found = real(wanted)
            return dataclasses.replace(found, validator=validator) if wanted == name else found

        monkeypatch.setattr(validate, "get_format", lookup)
        return real(name).validator

    return swap
