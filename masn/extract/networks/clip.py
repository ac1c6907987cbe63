"""Appearance from CLIP's image tower (OpenAI's ViT-B/16): the image embedding per frame, and
object features pooled from the patch-token grid at the detector's boxes.

The tower is the one OpenAI published: 16 x 16 patches embedded by a convolution, a class
token, learned positions, a pre-norm transformer with quick-GELU, ``ln_post`` and the
projection ``proj``. Parameter names follow OpenAI's file (without ``visual.``), so the
converted weights (:mod:`masn.weights.formats.openai_clip`) load by name. Frames are whole
frames resized to S x S (no centre crop, so the boxes map onto the grid); for S other than 224
the positional embedding of the patch grid is resized bicubically, as open_clip does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masn.caller import option
from masn.errors import InvalidInput
from masn.extract.networks.backbones import backbone
from masn.extract.networks.regions import pool_regions

if TYPE_CHECKING:
    from masn.extract.settings import ExtractionConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionTower:
    """The numbers of a CLIP ViT image tower; the defaults are OpenAI's ViT-B/16."""

    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    image_size: int = 224  # the size its positional embedding was trained for
    embed_dim: int = 512

    @property
    def grid(self) -> int:
        """Patches per side at ``image_size``."""
        return self.image_size // self.patch_size


VIT_B16 = VisionTower()


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attention(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(
            *(ResidualAttentionBlock(width, heads) for _ in range(layers))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.resblocks(x)


class CLIPAppearance(nn.Module):
    """Frames + boxes -> (image embedding (B, embed_dim), object features (B, N, width)).

    Takes uint8 RGB frames (B, S, S, 3) and normalises them with CLIP's statistics here.
    frame_size: S, which must be a multiple of the patch size (checked here, where a user's
    ``--frame-size`` first meets the network).
    """

    def __init__(self, tower: VisionTower = VIT_B16, frame_size: int = 224):
        super().__init__()
        if frame_size % tower.patch_size:
            raise InvalidInput(
                f"{option('frame_size', frame_size)} does not split into CLIP's "
                f"{tower.patch_size}-pixel "
                f"patches: use a multiple of {tower.patch_size} (e.g. {tower.image_size})"
            )
        self.tower = tower
        self.widths = (tower.embed_dim, tower.width)  # global, objects
        width, scale = tower.width, tower.width**-0.5
        self.conv1 = nn.Conv2d(3, width, tower.patch_size, tower.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(tower.grid**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, tower.layers, tower.heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, tower.embed_dim))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), False)

    def positions(self, rows: int, columns: int) -> Tensor:
        """The positional embedding for a rows x columns patch grid (class token first)."""
        grid = self.tower.grid
        if (rows, columns) == (grid, grid):
            return self.positional_embedding
        token, patches = self.positional_embedding[:1], self.positional_embedding[1:]
        patches = patches.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(
            patches, (rows, columns), mode="bicubic", antialias=True, align_corners=False
        )
        return torch.cat([token, patches.flatten(2).squeeze(0).t()])

    def tokens(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(image embedding (B, embed_dim), patch grid (B, width, S / 16, S / 16)) of uint8
        frames (B, S, S, 3); ``ln_post`` normalises every token, the grid's as the class's."""
        x = frames.permute(0, 3, 1, 2).float().div_(255.0)
        # The residual stream stays float32 under autocast; the layers' products may not.
        x = self.conv1((x - self.mean) / self.std).float()
        batch, width, rows, columns = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(batch, 1, width)
        x = torch.cat([cls, x], dim=1) + self.positions(rows, columns)
        x = self.ln_post(self.transformer(self.ln_pre(x)))
        embedding = x[:, 0] @ self.proj
        grid = x[:, 1:].transpose(1, 2).reshape(batch, width, rows, columns)
        return embedding.float(), grid.float()

    def forward(self, frames: Tensor, boxes: Tensor, frame_sizes: Tensor) -> tuple[Tensor, Tensor]:
        """frames (B, S, S, 3) uint8 RGB; boxes (B, N, 4) pixels of frames whose original
        (width, height) are ``frame_sizes`` (B, 2). Both outputs are float32."""
        embedding, grid = self.tokens(frames)
        return embedding, pool_regions(grid, boxes, frame_sizes)


@backbone("clip-vit-b16", role="appearance")
def clip_vit_b16(config: ExtractionConfig) -> CLIPAppearance:
    """OpenAI's CLIP ViT-B/16 image tower on frames of ``config.frame_size``."""
    return CLIPAppearance(VIT_B16, config.frame_size)
