"""One converter per published weights format (the manifest's ``format`` ids).

Each turns a downloaded file into a plain state dict keyed by our module names, ready for a
strict ``load_state_dict``: ``detector`` formats fill ``extract.detector.Detector``,
``caffe2_i3d`` / ``pytorchvideo_i3d`` fill ``extract.i3d.MotionFeatures`` ("nonlocal" /
"pytorchvideo" layout), ``torchvision_resnet`` fills ``extract.resnet.GlobalAppearance``.
The key contract of each is in its converter's module docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from masn.weights.convert_detector import (
    convert_detectron2_pkl,
    convert_hf_frcnn,
    convert_milvlg_bua,
)
from masn.weights.convert_i3d import convert_caffe2_i3d, convert_pytorchvideo_i3d
from masn.weights.convert_resnet import convert_torchvision_resnet
from masn.weights.source_tensors import StateDict

CONVERTERS: dict[str, Callable[[str | Path], StateDict]] = {
    "detectron2_pkl": convert_detectron2_pkl,
    "hf_frcnn": convert_hf_frcnn,
    "milvlg_bua": convert_milvlg_bua,
    "caffe2_i3d": convert_caffe2_i3d,
    "pytorchvideo_i3d": convert_pytorchvideo_i3d,
    "torchvision_resnet": convert_torchvision_resnet,
}


def convert(format_id: str, path: str | Path) -> StateDict:
    """The state dict of our module held by the file at ``path`` in format ``format_id``."""
    converter = CONVERTERS.get(format_id)
    if converter is None:
        raise ValueError(
            f"no converter for weights format {format_id!r}; known: {', '.join(CONVERTERS)}"
        )
    return converter(path)
