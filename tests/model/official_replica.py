"""A structural replica of the official MASN module tree, for writing checkpoints in its format.

The official code (ajseo95/MASN-pytorch) saves ``torch.save(model)``: a pickle that names its
classes by their module paths (``model.masn.MASN``, ``model.modules.gcn.GCN``, ...) and carries
their attribute layout, torch.nn weight-norm hooks and the weight-drop wrapper's bound method.
These classes rebuild that structure (no forward logic), registered under the official module
paths while a checkpoint is written, so tests can produce files exactly like the authors' ones.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from torch.nn.utils import weight_norm as _weight_norm


def weight_norm(module: nn.Module, name: str = "weight", dim: int | None = 0) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _weight_norm(module, name=name, dim=dim)


# --- model/modules/linear_weightdrop.py -----------------------------------------------------
class weight_drop:  # the official class name
    def __init__(self, module: nn.Module, weights: list[str], dropout: float):
        for name in weights:
            raw = getattr(module, name)
            del module._parameters[name]
            module.register_parameter(name + "_raw", nn.Parameter(raw.data))
        self.original_module_forward = module.forward
        self.weights = weights
        self.module = module
        self.dropout = dropout


class WeightDropLinear(nn.Linear):
    def __init__(self, *args, weight_dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.forward = weight_drop(self, ["weight"], weight_dropout)
        # After the first training forward the wrapper leaves a detached copy behind.
        self.weight = nn.Parameter(self.weight_raw.detach().clone())


# --- model/modules/rnn_encoder.py -----------------------------------------------------------
class SentenceEncoderRNN(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.hidden_size, self.n_layers, self.bidirectional = hidden, 1, True
        self.dropout = nn.Dropout(dropout)
        self.rnn_cell = nn.LSTM
        self.compress_hn_layers = nn.Linear(hidden, hidden, bias=False)
        self.compress_hn_layers_bi = nn.Linear(2 * hidden, hidden, bias=False)
        self.compress_hn_bi = nn.Linear(2 * hidden, hidden, bias=False)
        self.compress_output = nn.Linear(2 * hidden, hidden, bias=False)
        self.compress_output_dropout = nn.Dropout(dropout)
        self.variable_lengths, self.rnn_name = True, "lstm"
        self.rnn = nn.LSTM(hidden, hidden, 1, batch_first=True, bidirectional=True)


# --- model/modules/position_embedding.py ----------------------------------------------------
class PositionEncoding(nn.Module):
    def __init__(self, n_filters: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", torch.zeros(max_len, n_filters))


# --- model/modules/gcn.py -------------------------------------------------------------------
class GraphConvolution(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Linear(size, size, bias=False)
        self.layer_norm = nn.LayerNorm(size, elementwise_affine=False)


class GCN(nn.Module):
    def __init__(self, size: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(GraphConvolution(size) for _ in range(num_layers + 1))
        self.layernorm = nn.LayerNorm(size, elementwise_affine=False)
        self.dropout = nn.Dropout(0.1)


class VideoAdjLearner(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.scale = 100
        self.edge_layer_1 = weight_norm(nn.Linear(size, size, bias=False))
        self.edge_layer_2 = weight_norm(nn.Linear(size, size, bias=False))
        self.dropout = nn.Dropout(0.1)


# --- model/modules/ban/fc.py, ban.py --------------------------------------------------------
class FCNet(nn.Module):
    def __init__(self, dims: list[int], act: str = "ReLU", dropout: float = 0.0):
        super().__init__()
        layers = [nn.Dropout(dropout), weight_norm(nn.Linear(dims[0], dims[1]), dim=None)]
        if act:
            layers.append(getattr(nn, act)())
        self.main = nn.Sequential(*layers)


class BCNet(nn.Module):
    def __init__(self, size: int, h_out: int | None, k: int):
        super().__init__()
        self.c, self.k, self.h_out = 32, k, h_out
        self.v_net = FCNet([size, size * k], dropout=0.2)
        self.q_net = FCNet([size, size * k], dropout=0.2)
        self.dropout = nn.Dropout(0.5)
        if k > 1:
            self.p_net = nn.AvgPool1d(k, stride=k)
        if h_out is not None:
            self.h_mat = nn.Parameter(torch.randn(1, h_out, 1, size * k))
            self.h_bias = nn.Parameter(torch.randn(1, h_out, 1, 1))


class BiAttention(nn.Module):
    def __init__(self, size: int, glimpse: int):
        super().__init__()
        self.glimpse = glimpse
        self.logits = weight_norm(BCNet(size, glimpse, k=3), name="h_mat", dim=None)


class BAN(nn.Module):
    def __init__(self, size: int, glimpse: int):
        super().__init__()
        self.glimpse = glimpse
        self.v_att = BiAttention(size, glimpse)
        self.b_net = nn.ModuleList(BCNet(size, None, k=1) for _ in range(glimpse))
        self.q_prj = nn.ModuleList(FCNet([size, size], "", 0.2) for _ in range(glimpse))
        self.drop = nn.Dropout(0.5)
        self.tanh = nn.Tanh()


# --- model/modules/fusion/net_utils.py, fusion.py -------------------------------------------
class FC(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.dropout_r, self.use_relu = 0.1, True
        self.linear = nn.Linear(size, size)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.1)


class MLP(nn.Module):
    def __init__(self, size: int, out_size: int):
        super().__init__()
        self.fc = FC(size)
        self.linear = nn.Linear(size, out_size)


class LayerNorm(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.eps = 1e-6
        self.a_2 = nn.Parameter(torch.ones(size))
        self.b_2 = nn.Parameter(torch.zeros(size))


class AttAdj(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.hidden_size = size
        self.linear_k = nn.Linear(size, size)
        self.linear_q = nn.Linear(size, size)
        self.dropout = nn.Dropout(0.1)


class FFN(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.mlp = MLP(size, size)


class MotionApprFusion(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.n_layer, self.hidden_size = 1, size
        for kind in ("appr", "motion", "all"):
            setattr(self, f"{kind}_att_score", AttAdj(size))
        for kind in ("appr", "motion", "all"):
            setattr(self, f"{kind}_linear", nn.ModuleList([nn.Linear(size, size)]))
        for kind in ("appr", "motion", "all"):
            setattr(self, f"{kind}_norm", LayerNorm(size))
        self.ques_guide_att = AttAdj(size)
        self.ffn = FFN(size)
        self.dropout = nn.Dropout(0.1)
        self.norm = LayerNorm(size)


class AttFlat(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.flat_glimpses = 1
        self.mlp = MLP(size, 1)
        self.linear_merge = nn.Linear(size, size)


# --- model/masn.py --------------------------------------------------------------------------
class MASN(nn.Module):
    def __init__(self, vocab_size: int, answers: int | None, frames: int, hidden: int = 512):
        super().__init__()
        self.ablation, self.q_max_len, self.v_max_len, self.hidden_size = "none", 20, frames, hidden
        for scope in ("local", "global"):
            for stream in ("appr", "motion"):
                layer = WeightDropLinear(2048, hidden, weight_dropout=0.3, bias=False)
                setattr(self, f"compress_{stream}_{scope}", layer)
        self.glove = nn.Embedding(vocab_size, 300, padding_idx=0)
        self.glove.weight.requires_grad = False
        self.embedding_proj = nn.Sequential(nn.Dropout(0.3), nn.Linear(300, hidden, bias=False))
        self.sentence_encoder = SentenceEncoderRNN(hidden, 0.3)
        self.bbox_location_encoding = nn.Linear(6, 64)
        self.pos_location_encoding = PositionEncoding(64, frames)
        self.appr_local_proj = nn.Linear(hidden + 128, hidden)
        self.motion_local_proj = nn.Linear(hidden + 128, hidden)
        self.pos_enc = PositionEncoding(hidden, frames)
        self.appr_v = nn.Linear(2 * hidden, hidden)
        self.motion_v = nn.Linear(2 * hidden, hidden)
        self.appr_adj = VideoAdjLearner(hidden)
        self.appr_gcn = GCN(hidden, 2)
        self.motion_adj = VideoAdjLearner(hidden)
        self.motion_gcn = GCN(hidden, 2)
        self.res_layernorm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.i3d_layernorm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.appr_vq_interact = BAN(hidden, 4)
        self.motion_vq_interact = BAN(hidden, 4)
        self.motion_appr_fusion = MotionApprFusion(hidden)
        self.attflat = AttFlat(hidden)
        self.fc = nn.Linear(hidden, answers or 1)
        self.task = "FrameQA"


OFFICIAL_PATHS = {
    "model": [],
    "model.masn": [MASN],
    "model.modules": [],
    "model.modules.linear_weightdrop": [WeightDropLinear, weight_drop],
    "model.modules.rnn_encoder": [SentenceEncoderRNN],
    "model.modules.position_embedding": [PositionEncoding],
    "model.modules.gcn": [GraphConvolution, GCN, VideoAdjLearner],
    "model.modules.ban": [],
    "model.modules.ban.fc": [FCNet],
    "model.modules.ban.ban": [BCNet, BiAttention, BAN],
    "model.modules.fusion": [],
    "model.modules.fusion.net_utils": [FC, MLP, LayerNorm],
    "model.modules.fusion.fusion": [AttAdj, FFN, MotionApprFusion, AttFlat],
}


@contextmanager
def official_module_paths() -> Iterator[None]:
    """Registers the replica classes under the official module paths while pickling."""
    saved = {name: sys.modules.get(name) for name in OFFICIAL_PATHS}
    try:
        for name, classes in OFFICIAL_PATHS.items():
            module = types.ModuleType(name)
            for cls in classes:
                cls.__module__ = name
                setattr(module, cls.__qualname__, cls)
            sys.modules[name] = module
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def save_official_checkpoint(model: MASN, path, legacy: bool = False) -> None:
    """Writes ``torch.save(model)`` as the official code does (legacy: torch 1.x non-zip format)."""
    with official_module_paths(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Couldn't retrieve source code", UserWarning)
        torch.save(model, path, _use_new_zipfile_serialization=not legacy)
