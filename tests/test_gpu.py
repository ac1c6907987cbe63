"""CUDA behaviour of the network (run only where a GPU is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masn.model import MASN, MASNConfig
from masn.pipeline.benchmarks.model_step import synthetic_batch
from masn.pipeline.benchmarks.settings import PAPER_CASES, SHAPES

pytestmark = pytest.mark.gpu


def _model_and_batch(case):
    shape = SHAPES["small"]
    config = MASNConfig(
        vocab_size=shape["vocab"],
        task=case.task,
        num_answers=max(case.answers, 2),
        appearance_dim=shape["features"],
        motion_dim=shape["features"],
    )
    torch.manual_seed(0)
    model = MASN(config)
    batch = synthetic_batch(case, shape, torch.device("cpu"), torch.Generator().manual_seed(0))
    return model, batch


@pytest.mark.parametrize("case", PAPER_CASES, ids=lambda c: c.name)
def test_cuda_output_matches_cpu(case):
    model, (video, tokens, lengths, _) = _model_and_batch(case)
    with torch.no_grad():
        expected = model.eval()(video, tokens, lengths).output
        cuda = model.cuda()(video.to("cuda"), tokens.cuda(), lengths).output.cpu()
    torch.testing.assert_close(cuda, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("case", PAPER_CASES, ids=lambda c: c.name)
def test_training_step_never_waits_for_the_gpu(case):
    model, (video, tokens, lengths, target) = _model_and_batch(case)
    model = model.cuda().train()
    video, tokens, target = video.to("cuda"), tokens.cuda(), target.cuda()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], fused=True)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = model(video, tokens, lengths).output
        model.loss(output.float(), target).backward()
        optimizer.step()

    step()  # first call: lazy CUDA/cuDNN initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cuda_extraction_matches_cpu(tmp_path):
    from masn.extract.networks.feature_networks import FeatureNetworks
    from masn.extract.run.runner import extract_features
    from masn.extract.settings import DetectorConfig, ExtractionConfig, RunOptions
    from masn.extract.store.reader import FeatureStore
    from masn.extract.video.sources import list_videos
    from masn.pipeline.benchmarks.synthetic_video import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "clip.mp4", 2.0, (240, 320))
    config = ExtractionConfig(detector=DetectorConfig(min_size=240, max_size=400))
    stores = {}
    for device in ("cpu", "cuda"):
        stores[device] = tmp_path / f"{device}.h5"
        options = RunOptions(device, batch_size=2, workers=0)
        networks = FeatureNetworks.random(config)
        extract_features(list_videos(videos, "folder"), stores[device], config, networks, options)
    with FeatureStore(stores["cpu"]) as cpu, FeatureStore(stores["cuda"]) as cuda:
        a, b = cpu.read("clip.mp4"), cuda.read("clip.mp4")
    np.testing.assert_allclose(a.appearance, b.appearance, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(a.motion, b.motion, rtol=1e-2, atol=1e-2)
    assert (a.boxes.shape, b.boxes.shape) == ((3, 10, 4), (3, 10, 4))


def test_cuda_training_with_bf16_learns_planted_answers(tmp_path):
    """`masn train` on a GPU: pinned batches, bf16 autocast, the same planted task as on CPU."""
    from masn.pipeline.examples.planted import write_synthetic
    from masn.pipeline.training.settings import TrainSettings
    from masn.pipeline.training.trainer import train

    annotations, store = write_synthetic(tmp_path / "data", "open_ended", seed=1)
    report = train(
        TrainSettings(
            task="custom",
            annotations=str(annotations),
            features=str(store),
            out=str(tmp_path / "run"),
            glove="random",
            hidden=64,
            lr=1e-3,
            batch_size=16,
            workers=2,
            device="cuda",
            epochs=8,
        )
    )
    assert report["device"].startswith("cuda")
    assert report["test"]["accuracy"] > 4 * 100 / 6
