"""What last.pt holds besides the model: the loop position in words and the random streams
(a whole kill-and-resume run is tested in test_trainer.py)."""

from __future__ import annotations

from dataclasses import asdict

import torch

from masn.pipeline.training.resume import LoopState, position, rng_state, set_rng_state


def test_position_in_words():
    assert position(LoopState(epoch=2)) == "epoch 2"
    assert position(LoopState(epoch=2, step=5)) == "step 5 of epoch 3"


def test_loop_state_round_trips_through_a_dict():
    state = LoopState(epoch=3, step=4, global_step=40, best=71.5, best_epoch=1, history=[{"a": 1}])
    assert LoopState(**asdict(state)) == state


def test_random_streams_are_restored():
    saved = rng_state(torch.device("cpu"))
    first = torch.rand(5)
    torch.rand(7)
    set_rng_state(saved, torch.device("cpu"))
    assert torch.equal(torch.rand(5), first)
    assert set(saved) == {"cpu"}
