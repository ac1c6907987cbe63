"""Shared fixtures: the sibling ../shared folder (golden files, real data) and GPU skipping."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from masn.datasets import official_task

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASN_SHARED", REPO.parent / "shared"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test``) each worker computes on one thread: workers that each
    start a thread per core slow each other down several-fold (docs/training.md, CPU threads)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip without CUDA. Modules holding slow tests come first, so that parallel
    workers (``make test`` runs whole files per worker) start the long ones early and finish
    together."""
    slow_modules = {item.nodeid.split("::")[0] for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (override with MASN_SHARED); skips where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (golden files and real data live there)")
    return SHARED


class Golden:
    """One golden file of the official model and the official state dict that produced it."""

    def __init__(self, path: Path, reference_weights):
        self.path = path
        self.weights_file = Path(reference_weights.__file__)
        self.data = dict(np.load(path))
        keys, shapes = self.data["state_dict_keys"], self.data["state_dict_shapes"]
        self.shapes = {
            str(k): tuple(int(x) for x in str(s).strip("[]").split(",") if x)
            for k, s in zip(keys, shapes, strict=True)
        }
        self.state_dict = reference_weights.reference_state_dict(self.shapes)
        self.task = str(self.data["task"])  # the official code's name of the task
        self.head = official_task(self.task)[0].head

    def __getitem__(self, key: str) -> np.ndarray:
        return self.data[key]


def load_reference_weights(path: str | Path):
    """The golden folder's reference_weights.py (it regenerates the official state dicts)."""
    spec = importlib.util.spec_from_file_location("reference_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", params=["masn_frameqa_T20_s1.npz", "masn_action_T20_s2.npz"])
def golden(request: pytest.FixtureRequest, shared_dir: Path) -> Golden:
    folder = shared_dir / "golden"
    return Golden(folder / request.param, load_reference_weights(folder / "reference_weights.py"))


@pytest.fixture(scope="session")
def openai_clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``ViT-B-16.pt`` in OpenAI's published layout (TorchScript, float16, both towers) with
    random weights; the network and the weights format tests share it (300 MB, 4 s)."""
    from tests.weights.published import write_openai_clip

    path = tmp_path_factory.mktemp("openai_clip") / "ViT-B-16.pt"
    write_openai_clip(path)
    return path
