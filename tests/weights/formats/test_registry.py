"""The formats registry: every published format is there with its validator (and converter), and
a toy format registered by its decorator goes through the real manifest checks, fetch
(validation, lock file), conversion and installation, then leaves without a trace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from masn.errors import InvalidInput
from masn.weights.download import fetch
from masn.weights.formats.registry import (
    FORMATS,
    ROLES,
    convert,
    format_names,
    get_format,
    weights_format,
)
from masn.weights.installed import install, read_installed
from masn.weights.manifest import load_manifest
from masn.weights.verification import VerificationError, read_lock
from tests.weights.http_server import make_entry

NETWORK_FORMATS = {"detectron2_pkl", "hf_frcnn", "milvlg_bua", "caffe2_i3d"}
NETWORK_FORMATS |= {"pytorchvideo_i3d", "torchvision_resnet", "openai_clip"}
TOY = "toy_json"


def test_registry_covers_every_format() -> None:
    converters = {name for name in format_names() if get_format(name).converter is not None}
    assert converters == NETWORK_FORMATS
    assert set(format_names()) == NETWORK_FORMATS | {"glove_text", "glove_zip"}
    with pytest.raises(ValueError, match="no converter for weights format 'glove_zip'"):
        convert("glove_zip", "x")


def test_every_format_has_a_validator() -> None:
    for name in format_names():
        found = get_format(name)
        assert found.name == name and found.role in ROLES and callable(found.validator)


def test_every_model_format_has_a_converter() -> None:
    models = {e.format for e in load_manifest() if e.role != "glove"}
    assert all(get_format(name).converter is not None for name in models)


def test_network_formats_name_the_network_they_fill() -> None:
    filled = {name: (get_format(name).role, get_format(name).backbone) for name in format_names()}
    assert filled["caffe2_i3d"] == ("motion", "nonlocal")
    assert filled["pytorchvideo_i3d"] == ("motion", "pytorchvideo")
    assert filled["torchvision_resnet"] == ("appearance", "resnet152")
    assert filled["openai_clip"] == ("appearance", "clip-vit-b16")
    for name in ("detectron2_pkl", "hf_frcnn", "milvlg_bua"):
        assert filled[name] == ("detector", "vg-frcnn")
    assert filled["glove_zip"] == filled["glove_text"] == ("glove", None)
    with pytest.raises(ValueError, match="name the motion network it fills"):
        weights_format("x3d_pkl", role="motion")


def test_a_format_of_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="role 'vae' is not one of"):
        weights_format("vae_ckpt", role="vae")


def read_toy(path: Path) -> dict[str, torch.Tensor]:
    """The toy format: JSON ``{"toy": 1, "weight": 2 x 3 numbers, "bias": 2 numbers}``, the
    weights of a Linear(3, 2) kept as ``network.*``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(f"{path} is not JSON: not a toy weights file") from None
    if not isinstance(data, dict) or data.get("toy") != 1:
        raise InvalidInput(f"{path} has no toy mark: not a toy weights file")
    weight, bias = torch.tensor(data["weight"]), torch.tensor(data["bias"])
    if weight.shape != (2, 3) or bias.shape != (2,):
        raise InvalidInput(f"{path}: expected a 2 x 3 weight and 2 biases")
    return {"network.weight": weight, "network.bias": bias}


@pytest.fixture
def toy_format() -> Iterator[str]:
    weights_format(TOY, role="motion", backbone="toy")(read_toy)
    yield TOY
    FORMATS.remove(TOY)


def test_a_toy_format_goes_through_fetch_conversion_and_installation(
    toy_format: str, tmp_path: Path
) -> None:
    assert toy_format in format_names()
    entry = make_entry(["http://127.0.0.1:9/unreachable"], role="motion", format=toy_format)
    path = tmp_path / entry.filename
    path.write_text("not json")
    with pytest.raises(VerificationError, match="not a toy weights file"):
        fetch(entry, tmp_path)  # validation runs the toy reader; nothing is pinned
    assert read_lock(tmp_path) == {}

    weights = {"toy": 1, "weight": [[1, 2, 3], [4, 5, 6]], "bias": [7, 8]}
    path.write_text(json.dumps(weights))
    verified = fetch(entry, tmp_path)
    assert read_lock(tmp_path)[entry.name]["validated"]["format"] == toy_format
    assert torch.equal(verified.content["network.bias"], torch.tensor([7, 8]))
    assert torch.equal(convert(toy_format, path)["network.weight"], torch.tensor(weights["weight"]))

    record = install(entry, verified, tmp_path)
    state, installed = read_installed(tmp_path, "motion", "toy")
    assert record == installed and installed.backbone == "toy" and installed.format == toy_format
    assert torch.equal(state["network.weight"], torch.tensor(weights["weight"]))


def test_a_removed_toy_format_is_gone(toy_format: str) -> None:
    FORMATS.remove(toy_format)
    try:
        assert toy_format not in format_names()
        with pytest.raises(ValueError, match="format 'toy_json' is not one of"):
            make_entry(["http://x/a"], role="motion", format=toy_format)
        with pytest.raises(KeyError, match="unknown weights format 'toy_json'"):
            get_format(toy_format)
    finally:
        weights_format(TOY, role="motion", backbone="toy")(read_toy)  # for the fixture to remove
