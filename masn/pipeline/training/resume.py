"""What ``last.pt`` holds besides the model: where the loop is and every rank's random streams.

Saved at every epoch end and every ``save_every`` steps, restored by ``--resume``, so that a
killed run continues to the very same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LoopState:
    """Where the loop is: the next epoch and step in it, the best result so far."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def position(state: LoopState) -> str:
    """Where the loop stands, in words: "epoch 2" (done) or "step 5 of epoch 3"."""
    if state.step:
        return f"step {state.step} of epoch {state.epoch + 1}"
    return f"epoch {state.epoch}"


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's random streams: the CPU's, and the GPU's on a CUDA device."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restores the streams :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
