"""MASN: question branch, appearance and motion modules, motion-appearance fusion, task head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from masn.model.config import MASNConfig
from masn.model.fusion import MotionAppearanceFusion
from masn.model.heads import build_head
from masn.model.location import sinusoid_table
from masn.model.masking import length_mask
from masn.model.pooling import AttentionPool
from masn.model.question import QuestionEncoder
from masn.model.scaling import FeatureScaling
from masn.model.stream import StreamModule
from masn.model.video import VideoFeatures

BOX_FIELDS = 6  # x1/W, y1/H, x2/W, y2/H, w/W, h/H


@dataclass
class MASNOutput:
    """output: count (B,), open-ended logits (B, A) or multiple-choice scores (B, C).

    alpha: fusion weights over the attentions in use, (B, types) or (B, C, types) for multiple
    choice; None without the fusion module. attention: each fusion attention map (B[, C], 2L, 2L)
    when asked for, else empty.
    """

    output: Tensor
    alpha: Tensor | None
    attention: dict[str, Tensor]


class MASN(nn.Module):
    """Motion-Appearance Synergistic Network (Seo et al., ACL 2021).

    One implementation, two numerics modes (see :class:`MASNConfig`). Multiple-choice questions
    arrive as (B, C, S) tokens and are scored in one batched pass: the question-independent video
    branch runs once per video, not once per candidate.
    """

    def __init__(self, config: MASNConfig, word_vectors: Tensor | None = None):
        super().__init__()
        self.config = config
        self.question = QuestionEncoder(config, word_vectors)
        self.scaling = FeatureScaling(config.widths) if config.standardize else None
        self.box_encoding = nn.Linear(BOX_FIELDS, config.location_dim)
        kept = ("appearance", "motion") if config.streams == "both" else (config.streams,)
        widths = config.widths
        self.streams = nn.ModuleDict(
            {name: StreamModule(config, widths[name], widths[f"{name}_objects"]) for name in kept}
        )
        attentions = config.fusion_attentions
        self.fusion = MotionAppearanceFusion(config.hidden, attentions) if attentions else None
        self.pool = AttentionPool(config.hidden)
        self.head = build_head(config)

    def forward(
        self,
        video: VideoFeatures,
        tokens: Tensor,
        lengths: Tensor,
        return_attention: bool = False,
    ) -> MASNOutput:
        """tokens (B, S) and lengths (B,), or (B, C, S) and (B, C) for multiple choice.

        Lengths may stay on the CPU (no host synchronisation either way). Word features keep the
        full token width S; padded words are masked wherever they could matter.
        """
        config = self.config
        if self.scaling is not None:
            video = self.scaling(video)
        batch, frames, objects = video.appearance_objects.shape[:3]
        device = video.boxes.device
        candidates = self._check_question(tokens, lengths, batch)
        width = tokens.shape[-1]
        tokens = tokens.to(device, non_blocking=True).reshape(batch * candidates, width)
        lengths = lengths.to(device, non_blocking=True).reshape(-1)
        video_lengths = video.lengths.to(device, non_blocking=True)

        words, sentence = self.question(tokens, lengths)
        word_mask = length_mask(lengths, width, reference=config.reference)
        frame_mask = length_mask(video_lengths, frames, reference=config.reference)
        node_mask = frame_mask.repeat_interleave(objects, dim=1)

        temporal = sinusoid_table(frames, config.location_dim, device).to(words.dtype)
        temporal = (temporal * frame_mask.unsqueeze(-1)).unsqueeze(2).expand(-1, -1, objects, -1)
        location = torch.cat([self.box_encoding(video.boxes), temporal], dim=-1)
        position = sinusoid_table(frames, config.hidden, device)

        grouped_words = words.view(batch, candidates, width, -1)
        grouped_mask = word_mask.view(batch, candidates, width)
        inputs = {
            "appearance": (video.appearance, video.appearance_objects),
            "motion": (video.motion, video.motion_objects),
        }
        rows = []
        for name, stream in self.streams.items():
            frame_features, object_features = inputs[name]
            grounded = stream(
                frame_features,
                object_features,
                location,
                position,
                node_mask,
                grouped_words,
                grouped_mask,
            )
            rows.append(grounded.flatten(0, 1))
        u = torch.cat(rows, dim=1)  # B*C, streams*S, d
        row_mask = word_mask.repeat(1, len(rows))

        alpha, attention = None, {}
        if self.fusion is not None:
            summed = self._summed_rows(lengths, word_mask, batch, candidates).repeat(1, len(rows))
            u, alpha, attention = self.fusion(u, row_mask, summed, sentence, return_attention)
            alpha = self._ungroup(alpha, batch, candidates)
            attention = {k: self._ungroup(v, batch, candidates) for k, v in attention.items()}
        output = self.head(self.pool(u, row_mask), batch)
        return MASNOutput(output=output, alpha=alpha, attention=attention)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The task's training loss (MSE, cross-entropy or multiple-choice hinge)."""
        return self.head.loss(output, target)

    def predict(self, output: Tensor) -> Tensor:
        """The task's answers: rounded clamped counts, or argmax classes / candidates."""
        return self.head.predict(output)

    def _check_question(self, tokens: Tensor, lengths: Tensor, batch: int) -> int:
        """Validates question shapes and lengths; returns the number of candidates C."""
        multiple_choice = self.config.task == "multiple_choice"
        expected = 3 if multiple_choice else 2
        if tokens.dim() != expected or lengths.shape != tokens.shape[:-1]:
            layout = (
                "(B, C, S) with lengths (B, C)" if multiple_choice else "(B, S) with lengths (B,)"
            )
            raise ValueError(
                f"{self.config.task} questions must be {layout}; got tokens "
                f"{tuple(tokens.shape)} and lengths {tuple(lengths.shape)}"
            )
        if tokens.shape[0] != batch:
            raise ValueError(f"{tokens.shape[0]} questions for {batch} videos")
        width = tokens.shape[-1]
        message = f"question lengths must lie in [1, {width}] (the token width)"
        if lengths.device.type == "cpu":
            low, high = torch.stack(torch.aminmax(lengths)).tolist()  # one host read
            if low < 1 or high > width:
                raise ValueError(f"{message}; got {low}..{high}")
        else:  # checked on the device, without waiting for it
            torch._assert_async(((lengths >= 1) & (lengths <= width)).all(), message)
        return tokens.shape[1] if multiple_choice else 1

    def _summed_rows(
        self, lengths: Tensor, word_mask: Tensor, batch: int, candidates: int
    ) -> Tensor:
        """Word rows the fusion module sums into its per-attention summaries z_t.

        ``fixed``: the valid words. ``reference``: every row of the official forward pass, whose
        padded length was the longest question of the batch (per candidate for multiple choice,
        which the official code runs candidate by candidate), padded rows included.
        """
        if not self.config.reference:
            return word_mask
        padded = lengths.view(batch, candidates).amax(dim=0).repeat(batch)
        return length_mask(padded, word_mask.shape[1])

    def _ungroup(self, tensor: Tensor, batch: int, candidates: int) -> Tensor:
        if self.config.task == "multiple_choice":
            return tensor.view(batch, candidates, *tensor.shape[1:])
        return tensor
