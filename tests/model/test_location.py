"""Sinusoidal position tables: identical to the official float32 buffers, on any CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from masn.model.location import sinusoid_table

# The official buffer recipe, run under MKL's portable code path (the reference machine's).
OFFICIAL_RECIPE = """
import math, sys, torch
length, dim = int(sys.argv[1]), int(sys.argv[2])
table = torch.zeros(length, dim)
position = torch.arange(0, length).float().unsqueeze(1)
frequency = torch.exp(torch.arange(0, dim, 2).float() * -(math.log(10000.0) / dim))
table[:, 0::2] = torch.sin(position * frequency)
table[:, 1::2] = torch.cos(position * frequency)
torch.save(table, sys.argv[3])
"""


@pytest.mark.slow
@pytest.mark.parametrize("dim", [64, 512])
def test_tables_equal_the_official_buffers_on_mkl_portable_path(tmp_path, dim):
    if not torch.backends.mkl.is_available():
        pytest.skip("torch is built without MKL")
    out = tmp_path / "table.pt"
    env = {**os.environ, "MKL_CBWR": "COMPATIBLE"}
    subprocess.run(
        [sys.executable, "-c", OFFICIAL_RECIPE, "300", str(dim), str(out)], env=env, check=True
    )
    assert torch.equal(sinusoid_table(300, dim), torch.load(out))


def test_tables_are_cached_per_device_and_prefix_consistent():
    short, long = sinusoid_table(20, 512), sinusoid_table(30, 512)
    assert sinusoid_table(20, 512) is short
    assert torch.equal(long[:20], short)
    assert short.dtype == torch.float32 and short.shape == (20, 512)
    assert torch.equal(short[0, 0::2], torch.zeros(256)) and torch.equal(
        short[0, 1::2], torch.ones(256)
    )
