"""Importing official checkpoints: state dicts, whole pickled modules (zip and legacy), refusals."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch

from masn.model import MASN
from masn.model.official import (
    UNUSED_OFFICIAL_KEYS,
    convert_official_state_dict,
    forward_official,
    load_official,
    read_official_checkpoint,
)
from masn.unpickle import UnsafePickleError
from tests.model.official_replica import MASN as OfficialMASN
from tests.model.official_replica import save_official_checkpoint


def _official_model(vocab: int = 30, answers: int | None = 7, frames: int = 6) -> OfficialMASN:
    torch.manual_seed(0)
    return OfficialMASN(vocab, answers, frames)


def _inputs(batch: int = 3, frames: int = 6, vocab: int = 30, candidates: int = 0) -> dict:
    g = torch.Generator().manual_seed(1)
    shape = (batch, candidates) if candidates else (batch,)
    lengths = torch.randint(1, 21, shape, generator=g)
    tokens = torch.randint(1, vocab, (*shape, 20), generator=g) * (
        torch.arange(20) < lengths.unsqueeze(-1)
    )
    return {
        "res_avg": torch.randn(batch, frames, 2048, generator=g),
        "i3d_avg": torch.randn(batch, frames, 2048, generator=g),
        "res_obj": torch.randn(batch, frames, 10, 2048, generator=g),
        "i3d_obj": torch.randn(batch, frames, 10, 2048, generator=g),
        "bbox": torch.rand(batch, frames, 10, 6, generator=g),
        "video_length": torch.tensor([frames, 1, frames // 2][:batch]),
        "tokens": tokens,
        "lengths": lengths,
    }


def test_replica_has_exactly_the_golden_key_layout(golden):
    replica = OfficialMASN(golden.shapes["glove.weight"][0], golden.shapes["fc.weight"][0], 20)
    keys = set(replica.state_dict())
    stale = {f"compress_{s}_{p}.weight" for s in ("appr", "motion") for p in ("local", "global")}
    assert keys - stale == set(golden.shapes)
    for key, shape in golden.shapes.items():
        assert tuple(replica.state_dict()[key].shape) == shape, key


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickled_official_model_reproduces_golden(golden, tmp_path, legacy):
    replica = OfficialMASN(golden.shapes["glove.weight"][0], golden.shapes["fc.weight"][0], 20)
    replica.double().load_state_dict(golden.state_dict, strict=False)
    path = tmp_path / "FrameQA_59.73.pth"
    save_official_checkpoint(replica, path, legacy=legacy)

    state = read_official_checkpoint(path)
    output = forward_official(state, golden.head, golden.data)
    np.testing.assert_allclose(output, golden["output"], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_checkpoint_file_equals_state_dict(tmp_path, legacy):
    replica = _official_model()
    path = tmp_path / "model.pth"
    save_official_checkpoint(replica, path, legacy=legacy)
    from_file = load_official(path, "open_ended")
    from_dict = load_official(replica.state_dict(), "open_ended")
    expected = from_dict.state_dict()
    for name, tensor in from_file.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    inputs = _inputs()
    np.testing.assert_array_equal(
        forward_official(read_official_checkpoint(path), "open_ended", inputs),
        forward_official(replica.state_dict(), "open_ended", inputs),
    )


def test_weight_raw_is_used_and_stale_copy_ignored(tmp_path):
    replica = _official_model()
    with torch.no_grad():
        replica.compress_appr_local.weight.fill_(123.0)  # a DropConnect copy from training
    model = load_official(replica.state_dict(), "open_ended")
    expected = replica.compress_appr_local.weight_raw
    assert torch.equal(model.streams["appearance"].object_proj.weight, expected)
    assert not model.streams["appearance"].object_proj.weight.requires_grad


def test_saved_state_dict_file_loads_with_weights_only(tmp_path):
    replica = _official_model(answers=None)
    path = tmp_path / "state.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in replica.state_dict().items()}}, path)
    model = load_official(path, "count")
    assert model.config.task == "count" and model.config.mode == "reference"
    out = forward_official(replica.state_dict(), "count", _inputs())
    assert out.shape == (3,)


def test_multiple_choice_and_count_heads_load():
    replica = _official_model(answers=None)
    scores = forward_official(replica.state_dict(), "multiple_choice", _inputs(candidates=5))
    assert scores.shape == (3, 5)
    with pytest.raises(ValueError, match="1-output head"):
        load_official(_official_model(answers=7).state_dict(), "count")
    with pytest.raises(ValueError, match="unknown head 'counting'"):
        load_official(replica.state_dict(), "counting")


def test_unknown_and_missing_keys_are_reported():
    state = dict(_official_model().state_dict())
    state["appr_gcn.extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"appr_gcn\.extra\.weight"):
        convert_official_state_dict(state)
    del state["appr_gcn.extra.weight"]
    del state["attflat.linear_merge.bias"]
    with pytest.raises(RuntimeError, match=r"pool\.merge\.bias"):
        load_official(state, "open_ended")


def test_only_documented_keys_are_dropped():
    state = _official_model().state_dict()
    converted = convert_official_state_dict(state)
    dropped = {k for k in state if any(re.fullmatch(p, k) for p in UNUSED_OFFICIAL_KEYS)}
    stale = {f"compress_{s}_{p}.weight" for s in ("appr", "motion") for p in ("local", "global")}
    unused = {f"sentence_encoder.compress_hn_layers{s}.weight" for s in ("", "_bi")}
    assert dropped == stale | unused | {"pos_enc.pe", "pos_location_encoding.pe"}
    assert len(converted) == len(state) - len(dropped)
    assert set(converted) == set(MASN(load_official(state, "open_ended").config).state_dict())


class _RunsCode:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("call", [os.system, eval], ids=["os.system", "eval"])
def test_pickle_that_runs_code_is_refused(tmp_path, call):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w')"
    replica = _official_model()
    replica.sentence_encoder.payload = _RunsCode(call, command)
    path = tmp_path / "evil.pth"
    save_official_checkpoint(replica, path)
    with pytest.raises(UnsafePickleError, match=rf"{path.name}.*(system|eval)"):
        load_official(path, "open_ended")
    assert not marker.exists()


def test_plain_pickle_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(os.system, "true"), protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        read_official_checkpoint(path)


def test_missing_or_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "absent.pth", "open_ended")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"")
    with pytest.raises(ValueError, match=r"junk\.pth is empty \(0 bytes\)"):
        load_official(junk, "open_ended")
    for seed in range(64):
        junk.write_bytes(np.random.default_rng(seed).bytes(256))
        with pytest.raises(ValueError, match="not a readable torch checkpoint"):
            load_official(junk, "open_ended")
    for legacy in (False, True):
        whole = tmp_path / f"whole_{legacy}.pth"
        save_official_checkpoint(_official_model(), whole, legacy=legacy)
        truncated = tmp_path / f"truncated_{legacy}.pth"
        truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with pytest.raises(ValueError, match=f"{truncated.name} is not a readable") as caught:
            load_official(truncated, "open_ended")
        # The reason is the damage, not the state-dict attempt's refusal of a module's classes.
        assert "global" not in str(caught.value).lower() and "\n" not in str(caught.value)
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match="no official MASN weights"):
        load_official(other, "open_ended")
