"""Import of the official MASN implementation's weights (ajseo95/MASN-pytorch).

The official code stores ``torch.save(model)`` (a pickled module) or, for its state dicts, keys
such as ``appr_vq_interact.v_att.logits.h_mat_v``. This module maps those keys onto our modules,
builds a ``reference``-mode :class:`~model.masn.MASN` from them, and runs it the way the official
forward would. Nothing of the official code is imported, and nothing in a pickle is executed.
"""

from __future__ import annotations

import pickle
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from masn.errors import InvalidInput, MissingInput, UnknownName, root_cause
from masn.model.config import MASNConfig, Task
from masn.model.masn import MASN
from masn.model.video import VideoFeatures
from masn.unpickle import UnsafePickleError, load_module_pickle, module_state_dict

_STREAMS = {"appr": "appearance", "motion": "motion"}
_FUSION = {"appr": "appearance", "motion": "motion", "all": "all"}


def _prefix_table() -> list[tuple[str, str]]:
    """(official prefix, our prefix) pairs; ``{n}`` stands for a layer or glimpse index."""
    table = [
        ("glove.", "question.embedding."),
        ("embedding_proj.1.", "question.input_proj."),
        ("sentence_encoder.compress_output.", "question.word_proj."),
        ("sentence_encoder.compress_hn_bi.", "question.sentence_proj."),
        ("bbox_location_encoding.", "box_encoding."),
        ("attflat.mlp.fc.linear.", "pool.hidden."),
        ("attflat.mlp.linear.", "pool.score."),
        ("attflat.linear_merge.", "pool.merge."),
        ("fc.", "head.fc."),
        ("motion_appr_fusion.ques_guide_att.linear_q.", "fusion.guide_query."),
        ("motion_appr_fusion.ques_guide_att.linear_k.", "fusion.guide_key."),
        ("motion_appr_fusion.ffn.mlp.fc.linear.", "fusion.ffn.0."),
        ("motion_appr_fusion.ffn.mlp.linear.", "fusion.ffn.3."),
        ("motion_appr_fusion.norm.a_2", "fusion.norm.weight"),
        ("motion_appr_fusion.norm.b_2", "fusion.norm.bias"),
    ]
    # The bi-LSTM's directions are two LSTMs here; "_reverse" first, its prefix is longer.
    for tensor in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        rnn = f"sentence_encoder.rnn.{tensor}_l0"
        table += [(f"{rnn}_reverse", f"question.backward_lstm.{tensor}_l0")]
        table += [(rnn, f"question.forward_lstm.{tensor}_l0")]
    for theirs, ours in _FUSION.items():
        src, dst = f"motion_appr_fusion.{theirs}_", f"fusion.attentions.{ours}."
        table += [
            (f"{src}att_score.linear_q.", f"{dst}query."),
            (f"{src}att_score.linear_k.", f"{dst}key."),
            (f"{src}linear.0.", f"{dst}value."),
            (f"{src}norm.a_2", f"{dst}norm.weight"),
            (f"{src}norm.b_2", f"{dst}norm.bias"),
        ]
    for theirs, ours in _STREAMS.items():
        ban, dst = f"{theirs}_vq_interact.", f"streams.{ours}."
        table += [
            (f"compress_{theirs}_local.weight_raw", f"{dst}object_proj.weight"),
            (f"compress_{theirs}_global.weight_raw", f"{dst}global_proj.weight"),
            (f"{theirs}_local_proj.", f"{dst}local_proj."),
            (f"{theirs}_v.", f"{dst}node_proj."),
            (f"{theirs}_adj.edge_layer_1.", f"{dst}graph.edge_1."),
            (f"{theirs}_adj.edge_layer_2.", f"{dst}graph.edge_2."),
            (f"{theirs}_gcn.layers.{{n}}.weight.", f"{dst}graph.layers.{{n}}."),
            (f"{ban}v_att.logits.v_net.main.1.", f"{dst}interaction.att_nodes."),
            (f"{ban}v_att.logits.q_net.main.1.", f"{dst}interaction.att_words."),
            (f"{ban}v_att.logits.h_mat_v", f"{dst}interaction.att_weight_v"),
            (f"{ban}v_att.logits.h_mat_g", f"{dst}interaction.att_weight_g"),
            (f"{ban}v_att.logits.h_bias", f"{dst}interaction.att_bias"),
            (f"{ban}b_net.{{n}}.v_net.main.1.", f"{dst}interaction.glimpse_nodes.{{n}}."),
            (f"{ban}b_net.{{n}}.q_net.main.1.", f"{dst}interaction.glimpse_words.{{n}}."),
            (f"{ban}q_prj.{{n}}.main.1.", f"{dst}interaction.glimpse_out.{{n}}."),
        ]
    return table


_PREFIXES = [
    (re.compile(re.escape(theirs).replace(r"\{n\}", r"(\d+)")), ours.replace("{n}", r"\1"))
    for theirs, ours in _prefix_table()
]

# Official tensors that have no counterpart, and why they are safe to drop.
UNUSED_OFFICIAL_KEYS = {
    r"sentence_encoder\.compress_hn_layers(_bi)?\.weight": "multi-layer LSTM compressors, unused",
    r"compress_(appr|motion)_(local|global)\.weight": "per-forward DropConnect copy of weight_raw",
    r"(pos_location_encoding|pos_enc)\.pe": "sinusoidal tables, rebuilt by the model",
}


def convert_official_state_dict(official: Mapping[str, Any]) -> dict[str, Tensor]:
    """Renames official keys to ours (reshaping BAN's attention tensors).

    Drops only :data:`UNUSED_OFFICIAL_KEYS`; any other unknown key is an error.
    """
    converted, unknown = {}, []
    for key, value in official.items():
        tensor = torch.as_tensor(np.asarray(value)) if not isinstance(value, Tensor) else value
        target = _rename(key)
        if target is None:
            if not any(re.fullmatch(pattern, key) for pattern in UNUSED_OFFICIAL_KEYS):
                unknown.append(key)
            continue
        if target.endswith(("att_weight_v", "att_bias")):
            glimpses = tensor.shape[1]
            tensor = tensor.reshape(glimpses, -1).squeeze(-1)
        converted[target] = tensor
    if unknown:
        raise UnknownName(f"not keys of an official MASN model: {sorted(unknown)}")
    return converted


def _rename(key: str) -> str | None:
    for pattern, replacement in _PREFIXES:
        match = pattern.match(key)
        if match:
            return match.expand(replacement) + key[match.end() :]
    return None


def official_config(official: Mapping[str, Any], head: Task) -> MASNConfig:
    """The reference-mode config whose shapes match an official state dict of a ``head`` task."""
    if head not in typing.get_args(Task):
        raise InvalidInput(f"unknown head {head!r}; expected one of {typing.get_args(Task)}")
    shape = {key: tuple(np.shape(value)) for key, value in official.items()}
    for required in ("glove.weight", "fc.weight", "appr_vq_interact.v_att.logits.h_mat_v"):
        if required not in shape:
            raise UnknownName(f"an official MASN state dict has {required!r}; this one does not")
    vocab_size, word_dim = shape["glove.weight"]
    hidden = shape["embedding_proj.1.weight"][0]
    answers = shape["fc.weight"][0]
    kind = head
    if kind != "open_ended" and answers != 1:
        raise InvalidInput(f"a {head} checkpoint has a 1-output head; this one has {answers}")
    layers = {m.group(1) for k in shape if (m := re.match(r"appr_gcn\.layers\.(\d+)\.", k))}
    ban_shape = shape["appr_vq_interact.v_att.logits.h_mat_v"]
    return MASNConfig(
        vocab_size=vocab_size,
        task=kind,
        num_answers=answers if kind == "open_ended" else 1,
        mode="reference",
        word_dim=word_dim,
        hidden=hidden,
        appearance_dim=shape["compress_appr_global.weight_raw"][1],
        appearance_objects_dim=shape["compress_appr_local.weight_raw"][1],
        motion_dim=shape["compress_motion_global.weight_raw"][1],
        motion_objects_dim=shape["compress_motion_local.weight_raw"][1],
        location_dim=shape["bbox_location_encoding.weight"][0],
        graph_layers=len(layers),
        glimpses=ban_shape[1],
        attention_rank=ban_shape[3] // hidden,
    )


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """State dict from an official checkpoint file: a saved state dict or a pickled module.

    State dicts load with ``weights_only=True``; whole pickled modules (what the official code
    saves) go through :func:`masn.unpickle.load_module_pickle`, which never runs their code.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path} is empty (0 bytes): download the checkpoint again")
    try:
        loaded = _load_state_or_module(path)
    except UnsafePickleError:
        raise
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # a damaged pickle can fail in any of the unpickler's steps
        raise InvalidInput(
            f"{path} is not a readable torch checkpoint ({root_cause(error)})"
        ) from None
    state = _unwrap(loaded)
    if not any(key.endswith("h_mat_v") for key in state):
        raise InvalidInput(f"{path} holds no official MASN weights (no BAN attention tensors)")
    return state


def _load_state_or_module(path: Path) -> Any:
    """A saved state dict (``weights_only``), else a pickled module (the restricted unpickler).

    The second attempt runs outside the first one's handler, so that a damaged file is
    reported with the module unpickler's reason, not with the first attempt's.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # not a plain state dict: a pickled module, or a damaged file
    return load_module_pickle(path)


def _unwrap(loaded: Any) -> dict[str, Tensor]:
    if isinstance(loaded, Mapping):
        for container in ("state_dict", "model"):
            if isinstance(loaded.get(container), Mapping):
                loaded = loaded[container]
        state = dict(loaded)
    else:
        state = dict(module_state_dict(loaded))
    if state and all(key.startswith("module.") for key in state):  # DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_official(source: str | Path | Mapping[str, Any], head: Task) -> MASN:
    """A reference-mode MASN (in eval mode) holding official weights.

    source: an official state dict (tensors or numpy arrays under the official key names), or a
    checkpoint file saved by the official code (``torch.save(model)``, zip or legacy format) or
    holding such a state dict. head: the task's (count, open_ended or multiple_choice).
    """
    official = read_official_checkpoint(source) if isinstance(source, (str, Path)) else source
    state = convert_official_state_dict(official)
    model = MASN(official_config(official, head)).to(state["question.embedding.weight"].dtype)
    model.load_state_dict(state, strict=True)
    return model.eval()


def forward_official(
    state_dict: Mapping[str, Any], head: Task, inputs: Mapping[str, Any]
) -> np.ndarray:
    """What the official model outputs for ``inputs``, computed by our reference mode in float64.

    inputs use the official names: res_avg, i3d_avg, res_obj, bbox, i3d_obj, video_length,
    tokens, lengths (numpy arrays or tensors). Returns logits (B, C), multiple-choice scores
    (B, 5) or counts (B,).
    """
    model = load_official(state_dict, head).double()

    def tensor(name: str, dtype: torch.dtype) -> Tensor:
        if name not in inputs:
            raise KeyError(f"forward_official needs input {name!r}")
        return torch.as_tensor(np.asarray(inputs[name])).to(dtype)

    video = VideoFeatures(
        appearance=tensor("res_avg", torch.float64),
        motion=tensor("i3d_avg", torch.float64),
        appearance_objects=tensor("res_obj", torch.float64),
        motion_objects=tensor("i3d_obj", torch.float64),
        boxes=tensor("bbox", torch.float64),
        lengths=tensor("video_length", torch.int64),
    )
    with torch.no_grad():
        result = model(video, tensor("tokens", torch.int64), tensor("lengths", torch.int64))
    return result.output.numpy()
