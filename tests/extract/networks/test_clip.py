"""The CLIP appearance network: open_clip, an independent implementation reading the same
published archive, gives the same image embedding and patch tokens; object features are
RoIAlign on the patch grid; other frame sizes resize the positions as open_clip does."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from open_clip.model import resize_pos_embed
from open_clip.transformer import QuickGELU, VisionTransformer
from torchvision.ops import roi_align

from masn import caller
from masn.errors import InvalidInput
from masn.extract.networks.clip import (
    CLIP_MEAN,
    CLIP_STD,
    CLIPAppearance,
    VisionTower,
    clip_vit_b16,
)
from masn.extract.settings import ExtractionConfig
from masn.weights.formats.openai_clip import convert_openai_clip

log = logging.getLogger(__name__)

TINY = VisionTower(patch_size=16, width=64, layers=2, heads=2, image_size=64, embed_dim=16)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:FutureWarning")


def _frames(count: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, size, size, 3), dtype=torch.uint8, generator=generator)


def _normalised(frames: torch.Tensor) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def _difference(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, that over the largest magnitude of ``theirs``)."""
    largest = (ours - theirs).abs().max().item()
    return largest, largest / theirs.abs().max().item()


def _open_clip_tower(tower: VisionTower, image_size: int) -> VisionTransformer:
    """open_clip's image tower with OpenAI's settings (quick-GELU, class token, ln_post)."""
    return VisionTransformer(
        image_size=image_size,
        patch_size=tower.patch_size,
        width=tower.width,
        layers=tower.layers,
        heads=tower.heads,
        mlp_ratio=4.0,
        output_dim=tower.embed_dim,
        act_layer=QuickGELU,
        output_tokens=True,
    ).eval()


@pytest.fixture(scope="module")
def vit_b16(openai_clip_file: Path) -> CLIPAppearance:
    """Our ViT-B/16 holding the archive's weights, through our converter, loaded strictly."""
    network = clip_vit_b16(ExtractionConfig())
    network.load_state_dict(convert_openai_clip(openai_clip_file), strict=True)
    return network.eval()


def test_vit_b16_matches_open_clip_on_the_published_archive(vit_b16, openai_clip_file) -> None:
    """The reference reads the archive with torch's own TorchScript loader and computes with
    open_clip's image tower (built without its random initialisation, then given the weights)."""
    published = torch.jit.load(str(openai_clip_file), map_location="cpu").state_dict()
    visual = {
        k[len("visual.") :]: v.float() for k, v in published.items() if k.startswith("visual.")
    }
    with torch.device("meta"):
        theirs = _open_clip_tower(VisionTower(), 224)
    theirs.load_state_dict(visual, strict=True, assign=True)
    frames = _frames(1, 224)
    with torch.inference_mode():
        embedding, grid = vit_b16.tokens(frames)
        pooled, tokens = theirs(_normalised(frames))
    assert embedding.shape == (1, 512) and grid.shape == (1, 768, 14, 14)
    assert embedding.dtype == grid.dtype == torch.float32
    compared = {"embedding": (embedding, pooled), "tokens": (grid.flatten(2).mT, tokens)}
    for name, (ours, reference) in compared.items():
        absolute, relative = _difference(ours, reference)
        log.info("ViT-B/16 %s vs open_clip: max abs %.3g, relative %.3g", name, absolute, relative)
        assert relative < 1e-5, (name, absolute, relative)


def test_object_features_are_roi_align_on_the_patch_grid() -> None:
    torch.manual_seed(0)
    network = CLIPAppearance(TINY, frame_size=64).eval()
    frames = _frames(2, 64, seed=1)
    sizes = torch.tensor([[320, 240], [90, 160]])  # original (width, height) of each frame
    boxes = torch.tensor(
        [
            [[0.0, 0.0, 320.0, 240.0], [40.0, 30.0, 200.0, 150.0], [300.0, 10.0, 319.0, 230.0]],
            [[0.0, 0.0, 45.0, 80.0], [10.0, 100.0, 90.0, 160.0], [30.0, 30.0, 31.0, 31.0]],
        ]
    )
    with torch.inference_mode():
        embedding, objects = network(frames, boxes, sizes)
        _, grid = network.tokens(frames)
    assert embedding.shape == (2, 16) and objects.shape == (2, 3, 64) and grid.shape[-2:] == (4, 4)
    for image in range(2):
        cells_per_pixel = torch.tensor([4.0, 4.0]) / sizes[image].float()  # x, y
        rois = boxes[image] * cells_per_pixel.repeat(2)
        windows = roi_align(grid[image : image + 1], [rois], 7, sampling_ratio=2, aligned=True)
        torch.testing.assert_close(objects[image], windows.mean(dim=(2, 3)))
    # The whole-frame box pools (nearly) the grid's mean; the corner boxes differ from it.
    assert not torch.allclose(objects[0, 1], objects[0, 2])


@pytest.mark.parametrize("frame_size", [96, 32])
def test_other_frame_sizes_resize_positions_as_open_clip(frame_size: int) -> None:
    torch.manual_seed(1)
    native = _open_clip_tower(TINY, TINY.image_size)
    state = {f"visual.{key}": value for key, value in native.state_dict().items()}
    ours = CLIPAppearance(TINY, frame_size).eval()
    ours.load_state_dict({key[len("visual.") :]: value for key, value in state.items()})
    theirs = _open_clip_tower(TINY, frame_size)
    resize_pos_embed(state, SimpleNamespace(visual=theirs))
    theirs.load_state_dict({key[len("visual.") :]: value for key, value in state.items()})
    frames = _frames(2, frame_size, seed=2)
    with torch.inference_mode():
        embedding, grid = ours.tokens(frames)
        pooled, tokens = theirs(_normalised(frames))
    cells = frame_size // TINY.patch_size
    assert grid.shape == (2, TINY.width, cells, cells)
    torch.testing.assert_close(embedding, pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grid.flatten(2).mT, tokens, rtol=1e-5, atol=1e-5)


def test_frame_size_not_a_multiple_of_the_patch_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"frame_size=200 .*16-pixel patches"):
        clip_vit_b16(ExtractionConfig(frame_size=200))
    with caller.command_line():  # the command line names its flag
        with pytest.raises(InvalidInput, match=r"--frame-size 200 .*16-pixel patches"):
            clip_vit_b16(ExtractionConfig(frame_size=200))
        with pytest.raises(InvalidInput, match="--frame-size 72"):
            CLIPAppearance(TINY, frame_size=72)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bf16_autocast_returns_float32(device: str) -> None:
    torch.manual_seed(2)
    network = CLIPAppearance(TINY, frame_size=64).eval().to(device)
    frames, sizes = (
        _frames(2, 64, seed=3).to(device),
        torch.tensor([[64, 64], [128, 96]], device=device),
    )
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 32.0]], [[10.0, 20.0, 100.0, 90.0]]], device=device)
    with torch.inference_mode():
        exact = network(frames, boxes, sizes)
        with torch.autocast(device, dtype=torch.bfloat16):
            mixed = network(frames, boxes, sizes)
    for full, half in zip(exact, mixed, strict=True):
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)
