"""Synthetic files in the exact published weights formats (key names, shapes, containers).

The layouts restate the public module code the weights came from (the same rules as the
project's research key lists ``keys_*.txt`` from weights_formats.md):

* detectron2 R101-C4 names: ``facebookresearch/detectron2`` ``modeling/backbone/resnet.py`` as
  forked by airsplay/py-bottom-up-attention (FrozenBN, 4 buffers) and ported by HF
  ``examples/research_projects/lxmert/modeling_frcnn.py`` (BatchNorm2d, + num_batches_tracked,
  + ``cell_anchors.0``); attribute head ``cls_embedding`` / ``fc_attr`` / ``attr_score``, 1601
  classes with background last, ``bbox_pred`` 6400 rows;
* MILVLG/bottom-up-attention.pytorch ``bua/caffe/modeling/{rpn,fast_rcnn}.py``: 24-channel RPN
  (12 background then 12 object), ``cls_embed`` / ``attr_linear1`` / ``attr_linear2``,
  background first, ``bbox_pred`` 6404 rows, no num_batches_tracked;
* video-nonlocal-net ``lib/models/resnet_video_org.py`` + ``lib/utils/checkpoints.py``
  (``{"blobs": ...}`` with ``*_momentum``, ``model_iter``, ``lr``, ``pred_*``, Python 2 pickle);
* pytorchvideo 0.1.5 ``models/hub/resnet.py`` ``i3d_r50`` (``{"model_state": ...}``);
* torchvision ``models/resnet.py`` ``resnet152``;
* OpenAI's CLIP ``clip/model.py`` as a TorchScript archive (``ViT-B-16.pt``), built with
  open_clip's CLIP, which keeps OpenAI's names.

:class:`Published` writes one file per format on first use (the detector files are large).
"""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

NORM = ("weight", "bias", "running_mean", "running_var")
Shape = tuple[int, ...]


# ---------------------------------------------------------------- published layouts


def _bn(prefix: str, channels: int, counter: bool) -> dict[str, Shape]:
    keys = {f"{prefix}.{field}": (channels,) for field in NORM}
    if counter:
        keys[f"{prefix}.num_batches_tracked"] = ()
    return keys


def d2_r101_c4(counters: bool) -> dict[str, Shape]:
    """Stem, res2-res4 and the res5 box head, detectron2 names (keys_*_frcnn*.txt, backbone)."""
    keys = {"backbone.stem.conv1.weight": (64, 3, 7, 7)}
    keys |= _bn("backbone.stem.conv1.norm", 64, counters)
    stages = (("backbone.res2", 3, 64, 64), ("backbone.res3", 4, 256, 128))
    stages += (("backbone.res4", 23, 512, 256), ("roi_heads.res5", 3, 1024, 512))
    for stage, blocks, inputs, width in stages:
        for i in range(blocks):
            block, fan_in = f"{stage}.{i}", inputs if i == 0 else 4 * width
            convs = {"conv1": (width, fan_in, 1, 1), "conv2": (width, width, 3, 3)}
            convs["conv3"] = (4 * width, width, 1, 1)
            if i == 0:
                convs["shortcut"] = (4 * width, inputs, 1, 1)
            for conv, shape in convs.items():
                keys[f"{block}.{conv}.weight"] = shape
                keys |= _bn(f"{block}.{conv}.norm", shape[0], counters)
    return keys


def detector_layout(fmt: str) -> dict[str, Shape]:
    """keys_airsplay_faster_rcnn_from_caffe_attr.txt / keys_hf_frcnn_vg_finetuned.txt /
    keys_milvlg_bua_caffe_frcn_r101.txt (cell anchors added separately)."""
    keys = d2_r101_c4(counters=fmt == "hf_frcnn")
    rpn, box = "proposal_generator.rpn_head", "roi_heads.box_predictor"
    objectness = 24 if fmt == "milvlg_bua" else 12
    keys |= {f"{rpn}.conv.weight": (512, 1024, 3, 3), f"{rpn}.conv.bias": (512,)}
    keys |= {f"{rpn}.objectness_logits.weight": (objectness, 512, 1, 1)}
    keys |= {f"{rpn}.objectness_logits.bias": (objectness,)}
    keys |= {f"{rpn}.anchor_deltas.weight": (48, 512, 1, 1), f"{rpn}.anchor_deltas.bias": (48,)}
    keys |= {f"{box}.cls_score.weight": (1601, 2048), f"{box}.cls_score.bias": (1601,)}
    regression = 6404 if fmt == "milvlg_bua" else 6400
    keys |= {f"{box}.bbox_pred.weight": (regression, 2048), f"{box}.bbox_pred.bias": (regression,)}
    names = ("cls_embed", "attr_linear1", "attr_linear2") if fmt == "milvlg_bua" else None
    embedding, hidden, score = names or ("cls_embedding", "fc_attr", "attr_score")
    keys |= {f"{box}.{embedding}.weight": (1601, 256)}
    keys |= {f"{box}.{hidden}.weight": (512, 2304), f"{box}.{hidden}.bias": (512,)}
    keys |= {f"{box}.{score}.weight": (401, 512), f"{box}.{score}.bias": (401,)}
    return keys


I3D_STAGES = ((3, 64, (3, 3, 3)), (4, 128, (3, 1, 3, 1)), (6, 256, (3, 1, 3, 1, 3, 1)))
I3D_STAGES += ((3, 512, (1, 3, 1)),)


def caffe2_i3d_layout() -> dict[str, Shape]:
    """keys_caffe2_i3d_baseline_32x2_IN_pretrain_400k.txt, less momentum / model_iter / lr."""
    keys: dict[str, Shape] = {"conv1_w": (64, 3, 5, 7, 7)}
    keys |= {f"res_conv1_bn_{s}": (64,) for s in ("s", "b", "rm", "riv")}
    inputs = 64
    for stage, (blocks, width, temporal) in enumerate(I3D_STAGES, start=2):
        for i in range(blocks):
            fan_in = inputs if i == 0 else 4 * width
            convs = {"branch2a": (width, fan_in, temporal[i], 1, 1)}
            convs |= {"branch2b": (width, width, 1, 3, 3), "branch2c": (4 * width, width, 1, 1, 1)}
            if i == 0:
                convs["branch1"] = (4 * width, fan_in, 1, 1, 1)
            for conv, shape in convs.items():
                keys[f"res{stage}_{i}_{conv}_w"] = shape
                keys |= {
                    f"res{stage}_{i}_{conv}_bn_{s}": shape[:1] for s in ("s", "b", "rm", "riv")
                }
        inputs = 4 * width
    return keys | {"pred_w": (400, 2048), "pred_b": (400,)}


def pytorchvideo_layout() -> dict[str, Shape]:
    """keys_pytorchvideo_i3d_r50_I3D_8x8_R50.txt (``model_state``)."""
    keys = {"blocks.0.conv.weight": (64, 3, 5, 7, 7)} | _bn("blocks.0.norm", 64, True)
    inputs = 64
    for stage, (blocks, width, temporal) in zip((1, 3, 4, 5), I3D_STAGES, strict=True):
        for i in range(blocks):
            block, fan_in = f"blocks.{stage}.res_blocks.{i}", inputs if i == 0 else 4 * width
            convs = {"branch2.conv_a": (width, fan_in, temporal[i], 1, 1)}
            convs["branch2.conv_b"] = (width, width, 1, 3, 3)
            convs["branch2.conv_c"] = (4 * width, width, 1, 1, 1)
            if i == 0:
                convs["branch1_conv"] = (4 * width, fan_in, 1, 1, 1)
            for conv, shape in convs.items():
                keys[f"{block}.{conv}.weight"] = shape
                norm = conv.replace("conv", "norm")
                keys |= _bn(f"{block}.{norm}", shape[0], True)
        inputs = 4 * width
    return keys | {"blocks.6.proj.weight": (400, 2048), "blocks.6.proj.bias": (400,)}


def torchvision_resnet_layout(blocks: tuple[int, ...] = (3, 8, 36, 3)) -> dict[str, Shape]:
    """keys_torchvision_resnet152.txt."""
    keys = {"conv1.weight": (64, 3, 7, 7)} | _bn("bn1", 64, True)
    inputs = 64
    for layer, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(count):
            block, fan_in = f"layer{layer}.{i}", inputs if i == 0 else 4 * width
            convs = {"conv1": (width, fan_in, 1, 1), "conv2": (width, width, 3, 3)}
            convs["conv3"] = (4 * width, width, 1, 1)
            for index, (conv, shape) in enumerate(convs.items(), start=1):
                keys[f"{block}.{conv}.weight"] = shape
                keys |= _bn(f"{block}.bn{index}", shape[0], True)
            if i == 0:
                keys[f"{block}.downsample.0.weight"] = (4 * width, inputs, 1, 1)
                keys |= _bn(f"{block}.downsample.1", 4 * width, True)
        inputs = 4 * width
    return keys | {"fc.weight": (1000, 2048), "fc.bias": (1000,)}


def d2_cell_anchors() -> np.ndarray:
    """detectron2's ``generate_cell_anchors``: size-major, centred at 0 (cell_anchors_vg_d2)."""
    anchors = []
    for size in (64, 128, 256, 512):
        for ratio in (0.5, 1.0, 2.0):
            width = math.sqrt(size * size / ratio)
            height = ratio * width
            anchors.append([-width / 2, -height / 2, width / 2, height / 2])
    return np.array(anchors, dtype=np.float32)


# ---------------------------------------------------------------- synthetic files


def synthesize(layout: dict[str, Shape], seed: int) -> dict[str, np.ndarray]:
    """Distinct small random values per tensor (so a swapped mapping shows), int64 counters."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            arrays[key] = np.array(rng.integers(1, 1000), dtype=np.int64)
        else:
            arrays[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return arrays


def as_torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


def write_py2_pickle(path: Path, obj: object) -> None:
    """What Python 2's ``cPickle.dump(obj, file, 2)`` writes for nested dicts of str keys, ints
    and float32 numpy (1.x) arrays: byte strings as BINSTRING, arrays via
    ``numpy.core.multiarray._reconstruct`` and a BUILD with the raw data."""
    with path.open("wb") as file:
        out = file.write

        def string(data: bytes) -> None:
            if len(data) < 256:
                out(b"U" + bytes([len(data)]))
            else:
                out(b"T" + struct.pack("<I", len(data)))
            out(data)

        def integer(value: int) -> None:
            out(b"J" + struct.pack("<i", value))

        def write(value: object) -> None:
            if isinstance(value, dict):
                out(b"}")
                for key, item in value.items():
                    string(key.encode())
                    write(item)
                    out(b"s")
            elif isinstance(value, int):
                integer(value)
            else:
                assert isinstance(value, np.ndarray) and value.dtype == np.float32
                out(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
                integer(0)
                out(b"\x85")
                string(b"b")
                out(b"\x87R(")  # ndarray made; its state tuple follows
                integer(1)
                out(b"(")
                for dim in value.shape:
                    integer(dim)
                out(b"tcnumpy\ndtype\n")
                string(b"f4")
                integer(0)
                integer(1)
                out(b"\x87R(")  # dtype made; its state tuple follows
                integer(3)
                string(b"<")
                out(b"NNN")
                integer(-1)
                integer(-1)
                integer(0)
                out(b"tb\x89")  # dtype built; is_fortran = False
                string(memoryview(np.ascontiguousarray(value)).cast("B"))
                out(b"tb")

        out(b"\x80\x02")
        write(obj)
        out(b".")


class Published:
    """One synthetic file per format, written on first use: ``published[fmt]`` is (path, the
    source tensors as written)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._made: dict[str, tuple[Path, dict]] = {}

    def __getitem__(self, fmt: str) -> tuple[Path, dict]:
        if fmt not in self._made:
            self._made[fmt] = getattr(self, f"_{fmt}")()
        return self._made[fmt]

    def _detectron2_pkl(self) -> tuple[Path, dict]:
        airsplay = synthesize(detector_layout("detectron2_pkl"), seed=1)
        path = self.folder / "faster_rcnn_from_caffe_attr.pkl"
        with path.open("wb") as file:  # a Python 3 detectron2 dump: protocol 4, numpy values
            pickle.dump({"model": airsplay, "__author__": "airsplay"}, file, protocol=4)
        return path, airsplay

    def _hf_frcnn(self) -> tuple[Path, dict]:
        hf = synthesize(detector_layout("hf_frcnn"), seed=2)
        hf["proposal_generator.anchor_generator.cell_anchors.0"] = d2_cell_anchors()
        path = self.folder / "pytorch_model.bin"
        torch.save(as_torch(hf), path)
        return path, hf

    def _milvlg_bua(self) -> tuple[Path, dict]:
        milvlg = synthesize(detector_layout("milvlg_bua"), seed=3)
        path = self.folder / "bua-caffe-frcn-r101-k10-100.pth"
        torch.save({"model": as_torch(milvlg)}, path)
        return path, milvlg

    def _caffe2_i3d(self) -> tuple[Path, dict]:
        blobs: dict = synthesize(caffe2_i3d_layout(), seed=4)
        momenta = {f"{k}_momentum": v for k, v in blobs.items() if not k.endswith(("_rm", "_riv"))}
        blobs |= momenta | {"model_iter": 400000, "lr": np.array([0.0001], dtype=np.float32)}
        path = self.folder / "i3d_baseline_32x2_IN_pretrain_400k.pkl"
        write_py2_pickle(path, {"blobs": blobs})
        return path, blobs

    def _pytorchvideo_i3d(self) -> tuple[Path, dict]:
        pyvideo = synthesize(pytorchvideo_layout(), seed=5)
        path = self.folder / "I3D_8x8_R50.pyth"
        torch.save({"model_state": as_torch(pyvideo), "epoch": 196}, path)
        return path, pyvideo

    def _torchvision_resnet(self) -> tuple[Path, dict]:
        resnet = synthesize(torchvision_resnet_layout(), seed=6)
        path = self.folder / "resnet152-f82ba261.pth"
        torch.save(as_torch(resnet), path)
        return path, resnet


# ---------------------------------------------------------------- OpenAI CLIP (TorchScript)

# open_clip's configurations of the OpenAI layout: ViT-B/16 as published, and a tiny one.
CLIP_VIT_B16 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}
CLIP_TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def openai_clip_model(config: dict, seed: int) -> torch.nn.Module:
    """open_clip's CLIP (quick-GELU) with random weights, arranged as OpenAI's own module: the
    settings ``input_resolution``, ``context_length`` and ``vocab_size`` as tensors of the
    state dict, the text tower's causal mask a plain attribute (not in the state dict)."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**config, quick_gelu=True).eval()
    del model.context_length, model.vocab_size
    settings = {
        "input_resolution": config["vision_cfg"]["image_size"],
        "context_length": config["text_cfg"]["context_length"],
        "vocab_size": config["text_cfg"]["vocab_size"],
    }
    for name, value in settings.items():
        model.register_buffer(name, torch.tensor(value))
    mask = model.attn_mask
    del model.attn_mask
    model.attn_mask = mask
    return model


def write_openai_clip(path: Path, config: dict = CLIP_VIT_B16, seed: int = 7) -> dict:
    """A TorchScript archive laid out as OpenAI's ``ViT-B-16.pt``: both towers in float16, saved
    by ``torch.jit.save`` as OpenAI's was. Returns its state dict."""
    scripted = torch.jit.script(openai_clip_model(config, seed).half())
    torch.jit.save(scripted, str(path))
    return {key: value.detach() for key, value in scripted.state_dict().items()}
