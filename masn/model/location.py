"""Sinusoidal position codes for frame indices (paper eq. 1 and the global features)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

# The official code builds its tables in float32 with torch.exp, which MKL evaluates with
# CPU-dependent code paths, so the tables differ in the last bit between machines. We use the
# correctly rounded exp instead, except for these float32 exponents, where MKL's portable
# (non-AVX2/AVX-512) path, the one the reference outputs were produced with, rounds one ulp up.
_EXP_ONE_ULP_UP = (float.fromhex("-0x1.ba18aap-1"), float.fromhex("-0x1.e825e6p+2"))


@lru_cache(maxsize=64)
def _table(length: int, dim: int, device: torch.device) -> Tensor:
    if device.type != "cpu":
        return _table(length, dim, torch.device("cpu")).to(device)
    exponent = torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim)
    frequency = torch.exp(exponent.double()).float()
    for value in _EXP_ONE_ULP_UP:
        up = exponent == value
        frequency[up] = torch.nextafter(frequency[up], torch.tensor(math.inf))
    angle = torch.arange(length, dtype=torch.float32).unsqueeze(1) * frequency
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table


def sinusoid_table(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(length, dim) float32 table: sin (even columns), cos (odd) of ``pos / 10000^(2i/dim)``.

    Always computed on the CPU (GPU sin/cos round differently) and cached per device, so every
    device and both numerics modes see the values the official model's float32 buffers hold.
    """
    return _table(length, dim, torch.device(device or "cpu"))
