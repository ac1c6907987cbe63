"""The manifest of published weights: sane entries, the default set, checks of entries."""

from __future__ import annotations

import pytest

from masn.weights.formats.registry import ROLES, format_names
from masn.weights.manifest import default_entries, get, load_manifest
from tests.weights.http_server import make_entry


def test_manifest_is_sane() -> None:
    entries = load_manifest()
    assert len({e.name for e in entries}) == len(entries)
    assert len({e.filename for e in entries}) == len(entries)
    for entry in entries:
        assert entry.urls and entry.role in ROLES and entry.format in format_names()
        assert entry.licence and entry.description and entry.page.startswith("https://")
    assert {e.filename for e in default_entries()} == {
        "faster_rcnn_from_caffe_attr_original.pkl",
        "i3d_baseline_32x2_IN_pretrain_400k.pkl",
        "resnet152-394f9c45.pth",
        "glove.42B.300d.zip",
    }
    assert {e.role for e in default_entries()} == set(ROLES)
    formats = {e.format for e in entries}
    assert formats >= {"detectron2_pkl", "hf_frcnn", "milvlg_bua", "caffe2_i3d"}
    assert formats >= {"pytorchvideo_i3d", "torchvision_resnet", "glove_zip"}
    assert get("resnet152-imagenet-v1").sha256_prefix == "394f9c45"
    assert get("resnet152-imagenet-v2").sha256_prefix == "f82ba261"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as error:
        get("resnet-9000")
    assert "resnet152-imagenet-v1" in error.value.args[0]


def test_invalid_manifest_entries_are_rejected() -> None:
    with pytest.raises(ValueError, match="role"):
        make_entry(["http://x/a"], role="vae")
    with pytest.raises(ValueError, match="sha256"):
        make_entry(["http://x/a"], sha256="ABC")
    with pytest.raises(ValueError, match="bare file name"):
        make_entry(["http://x/a"], filename="../evil.bin")
