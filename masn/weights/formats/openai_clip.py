"""The ``openai_clip`` format: OpenAI's published CLIP ViT-B/16 (``ViT-B-16.pt``), converted to
our appearance network's names.

The file is a TorchScript archive holding both towers in float16. ``torch.load`` with
``weights_only=True`` refuses TorchScript and ``torch.jit.load`` would run the archive's code, so
its ``data.pkl`` is read by the restricted unpickler
(:func:`masn.unpickle.load_torchscript_tensors`): nothing the file names is run.

Output key contract (``masn.extract.networks.clip.CLIPAppearance`` state dict, 152 tensors,
float32): the image tower's names without ``visual.``: ``conv1.weight`` (768, 3, 16, 16),
``class_embedding`` (768), ``positional_embedding`` (197, 768), ``ln_pre.*``,
``transformer.resblocks.{0..11}.`` ``ln_1.*``, ``attn.in_proj_weight`` (2304, 768),
``attn.in_proj_bias``, ``attn.out_proj.*``, ``ln_2.*``, ``mlp.c_fc.*`` (3072, 768),
``mlp.c_proj.*`` (768, 3072), then ``ln_post.*`` and ``proj`` (768, 512).
"""

from __future__ import annotations

from pathlib import Path

from masn.weights.formats.registry import weights_format
from masn.weights.formats.source_tensors import (
    SourceTensors,
    StateDict,
    Unused,
    read_torchscript_file,
)

MODEL = "OpenAI's CLIP ViT-B/16 (ViT-B-16.pt)"
UNUSED = (
    Unused(
        r"(?!visual\.).*",
        "the text tower, and the model's input_resolution, context_length, vocab_size",
    ),
)
# OpenAI's ViT-B/16 image tower: width, blocks, patch side, patches per side at 224 pixels and
# the embedding's width.
WIDTH, LAYERS, PATCH, GRID, EMBED = 768, 12, 16, 14, 512


def image_tower_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the published image tower (names without ``visual.``) and its shape."""
    norm = {"weight": (WIDTH,), "bias": (WIDTH,)}
    shapes: dict[str, tuple[int, ...]] = {
        "conv1.weight": (WIDTH, 3, PATCH, PATCH),
        "class_embedding": (WIDTH,),
        "positional_embedding": (GRID * GRID + 1, WIDTH),
        **{f"ln_pre.{field}": shape for field, shape in norm.items()},
    }
    for layer in range(LAYERS):
        block = f"transformer.resblocks.{layer}"
        shapes |= {
            f"{block}.ln_1.weight": (WIDTH,),
            f"{block}.ln_1.bias": (WIDTH,),
            f"{block}.attn.in_proj_weight": (3 * WIDTH, WIDTH),
            f"{block}.attn.in_proj_bias": (3 * WIDTH,),
            f"{block}.attn.out_proj.weight": (WIDTH, WIDTH),
            f"{block}.attn.out_proj.bias": (WIDTH,),
            f"{block}.ln_2.weight": (WIDTH,),
            f"{block}.ln_2.bias": (WIDTH,),
            f"{block}.mlp.c_fc.weight": (4 * WIDTH, WIDTH),
            f"{block}.mlp.c_fc.bias": (4 * WIDTH,),
            f"{block}.mlp.c_proj.weight": (WIDTH, 4 * WIDTH),
            f"{block}.mlp.c_proj.bias": (WIDTH,),
        }
    shapes |= {f"ln_post.{field}": shape for field, shape in norm.items()}
    shapes["proj"] = (WIDTH, EMBED)
    return shapes


@weights_format("openai_clip", role="appearance", backbone="clip-vit-b16")
def convert_openai_clip(path: str | Path) -> StateDict:
    """OpenAI's ``ViT-B-16.pt`` (TorchScript, float16) -> the image tower, float32.

    Drops the text tower; any other missing, extra or misshapen tensor raises
    :class:`ConversionError` naming the file.
    """
    path = Path(path)
    source = SourceTensors(path, read_torchscript_file(path), MODEL, UNUSED)
    out = {
        name: source.take(f"visual.{name}", shape) for name, shape in image_tower_shapes().items()
    }
    source.finish()
    return out
