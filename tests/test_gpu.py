"""CUDA behaviour of the network (run only where a GPU is present)."""

from __future__ import annotations

import pytest
import torch

from model import MASN, MASNConfig
from pipeline.bench import PAPER_CASES, SHAPES, synthetic_batch

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
