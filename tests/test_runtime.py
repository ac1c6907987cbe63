"""Shared run machinery (masn/runtime.py): devices, precision, workers, loaders, timing."""

from __future__ import annotations

import pytest
import torch

from masn.errors import InvalidInput
from masn.runtime import (
    autocast,
    check_device,
    data_loader,
    default_precision,
    default_workers,
    device_name,
    peak_memory_mb,
    resolve_device,
)


def test_device_resolution(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    with pytest.raises(InvalidInput, match="use device='cpu'"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InvalidInput, match="there is no GPU 2; this machine has 2"):
        resolve_device("cuda:2")


def test_device_names_are_checked_without_a_device():
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        check_device(device)
    for device in ("gpu", "tpu", "cuda:", "CUDA", "cuda:x", "mps", ""):
        with pytest.raises(InvalidInput, match="use auto, cpu, cuda or cuda:N"):
            check_device(device)


def test_precision_policy_and_autocast():
    cpu = torch.device("cpu")
    assert default_precision(cpu) == "fp32" and default_precision(torch.device("cuda")) == "bf16"
    weight = torch.randn(4, 4)
    with autocast(cpu, "fp32"):
        assert (weight @ weight).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (weight @ weight).dtype == torch.bfloat16


def test_workers_loader_and_timing(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == 8  # 64 / 4 ranks - 1, capped at 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_workers() == 1
    state = torch.get_rng_state()
    batches = list(data_loader(list(range(10)), torch.device("cpu"), 0, batch_size=4, shuffle=True))
    assert torch.equal(state, torch.get_rng_state())  # the global stream is left alone
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    peak, kind = peak_memory_mb(torch.device("cpu"))
    assert peak > 10 and kind == "process_max_rss"
    assert device_name(torch.device("cpu")).startswith("CPU")
