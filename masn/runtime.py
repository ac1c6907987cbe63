"""How runs use the machine: device, precision, worker processes, data loaders and timing.

One home for the run machinery that extraction, training, evaluation, answering and the
benchmarks share, so that "auto" means the same device, "bf16" the same autocast and a default
worker count the same number everywhere. Device names are checked without importing torch
(settings are validated while the command line is parsed); everything else imports it on use.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from masn.caller import on_command_line, option
from masn.errors import InvalidInput

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader, Dataset

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
MAX_WORKERS = 8
THREADS_VARIABLE = "OMP_NUM_THREADS"
"""The environment variable that sets torch's CPU threads: masn leaves them alone when it is set."""


def check_device(device: str) -> None:
    """Refuses device names other than auto, cpu, cuda and cuda:N (whether it exists is
    checked by :func:`resolve_device`)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise InvalidInput(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N (N = 0, 1..)")


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``device`` (auto, cpu, cuda or cuda:N).

    ``auto``: this rank's GPU (``cuda:local_rank``) when CUDA is available, else the CPU. A
    named GPU that is absent (no CUDA, or no such index) is refused with ``InvalidInput``.
    """
    import torch

    check_device(device)
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "has no CUDA support" if torch.version.cuda is None else "finds no CUDA GPU"
        raise InvalidInput(
            f"{option('device', device)}: this PyTorch {why}; use {option('device', 'cpu')} "
            "(or auto)"
        )
    count = torch.cuda.device_count()
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise InvalidInput(
            f"{option('device', device)}: there is no GPU {index}; this machine has {count} "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return torch.device(device)


def default_precision(device: torch.device) -> Precision:
    """bf16 autocast on GPUs (the paper's sizes fit and run ~2x faster), fp32 on CPUs."""
    return "bf16" if device.type == "cuda" else "fp32"


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``precision`` is bf16; plain float32 otherwise."""
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rank_cores() -> int:
    """The CPU cores of this rank's share of the node (all of them without torchrun)."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, (os.cpu_count() or 2) // local_ranks)


def default_workers() -> int:
    """Worker processes per rank: the CPU cores of this rank's share of the node, minus the one
    the rank itself runs on, at least 1 and at most ``MAX_WORKERS``."""
    return max(1, min(MAX_WORKERS, rank_cores() - 1))


def share_cpu(workers: int) -> int:
    """For a `masn` command, gives torch's CPU operators the cores of this rank that ``workers``
    loader processes leave free (at least one), unless ``OMP_NUM_THREADS`` sets the threads;
    returns the threads. Python callers keep the threads they chose. A training step on a busy
    CPU waits for its slowest thread; fewer threads keep it fast (docs/training.md#cpu-threads).
    """
    import torch

    if on_command_line() and THREADS_VARIABLE not in os.environ:
        torch.set_num_threads(max(1, rank_cores() - workers))
    return torch.get_num_threads()


@contextlib.contextmanager
def threads_restored() -> Iterator[None]:
    """Gives torch back its CPU threads after the body (a command that :func:`share_cpu`), where
    torch was imported before it: a command run in-process leaves its caller's setting."""
    torch = sys.modules.get("torch")
    threads = None if torch is None else torch.get_num_threads()
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(threads)


def data_loader(
    dataset: Dataset, device: torch.device, workers: int, prefetch: int = 2, **options: Any
) -> DataLoader:
    """A DataLoader that pins its batches for a GPU and prefetches ``prefetch`` per worker.

    Its own generator leaves the global random stream untouched, so that a resumed run draws
    the same numbers as an uninterrupted one.
    """
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=prefetch if workers else None,
        generator=torch.Generator().manual_seed(0),
        **options,
    )


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op on the CPU), so that a clock reads true."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """The peak memory so far and what it measures: CUDA allocations, or this process's RSS."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "process_max_rss"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with the number of threads torch uses."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = f"{torch.get_num_threads()} threads"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({threads})"
    return f"CPU ({threads})"
