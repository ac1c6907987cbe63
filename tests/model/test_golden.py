"""Reference mode against the official implementation's golden outputs (../shared/golden)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from masn.model.official import forward_official, load_official
from masn.model.video import VideoFeatures


def test_forward_official_reproduces_golden_output(golden):
    output = forward_official(golden.state_dict, golden.head, golden.data)
    expected = golden["output"]
    assert output.shape == expected.shape and output.dtype == np.float64
    assert np.abs(output - expected).max() / np.abs(expected).max() < 1e-12
    np.testing.assert_allclose(output, expected, rtol=1e-9, atol=1e-14)


def test_predictions_match_golden(golden):
    model = load_official(golden.state_dict, golden.head)
    output = torch.as_tensor(golden["output"])
    assert torch.equal(model.predict(output), torch.as_tensor(golden["prediction"]))


def _capture(model) -> dict[str, object]:
    """Forward hooks that record the intermediates the golden files store."""
    seen: dict[str, object] = {}

    def keep(name, pick):
        return lambda module, inputs, output: seen.__setitem__(name, pick(output))

    model.question.register_forward_hook(keep("question_words", lambda out: out[0]))
    for stream in ("appearance", "motion"):
        modules = model.streams[stream]
        modules.graph.register_forward_hook(keep(f"{stream}_graph", lambda out: out))
        modules.interaction.register_forward_hook(keep(f"{stream}_vq", lambda out: out[0]))
    model.fusion.register_forward_hook(keep("fusion", lambda out: out))
    model.pool.register_forward_hook(keep("pooled", lambda out: out))
    return seen


def test_every_intermediate_matches_golden(golden):
    model = load_official(golden.state_dict, golden.head).double()
    seen = _capture(model)
    data = {k: torch.as_tensor(v) for k, v in golden.data.items() if v.dtype.kind not in "US"}
    video = VideoFeatures(
        appearance=data["res_avg"].double(),
        motion=data["i3d_avg"].double(),
        appearance_objects=data["res_obj"].double(),
        motion_objects=data["i3d_obj"].double(),
        boxes=data["bbox"].double(),
        lengths=data["video_length"],
    )
    with torch.no_grad():
        model(video, data["tokens"], data["lengths"])

    batch = video.lengths.shape[0]
    candidates = data["tokens"].shape[1] if golden.task == "Action" else 1
    words = seen["question_words"].view(batch, candidates, -1, 512)
    padded = words.shape[2]
    fused, alpha, _ = seen["fusion"]
    fused = fused.view(batch, candidates, 2 * padded, 512)
    alpha = alpha.view(batch, candidates, 1, 3)
    pooled = seen["pooled"].view(batch, candidates, 512)
    compared = 0
    for c in range(candidates):
        suffix = f"_c{c}" if candidates > 1 else ""
        length = golden[f"question_words{suffix}"].shape[1]  # this candidate's official pass width
        ours = {
            "question_words": words[:, c, :length],
            "appearance_graph": seen["appearance_graph"],
            "motion_graph": seen["motion_graph"],
            "appearance_vq": seen["appearance_vq"][:, c, :length],
            "motion_vq": seen["motion_vq"][:, c, :length],
            "fusion_alpha": alpha[:, c],
            "fusion_out": torch.cat(
                [fused[:, c, :length], fused[:, c, padded : padded + length]], dim=1
            ),
            "pooled": pooled[:, c],
        }
        for name, value in ours.items():
            np.testing.assert_allclose(
                value.numpy(), golden[name + suffix], rtol=1e-5, atol=1e-5, err_msg=name + suffix
            )
            compared += 1
    assert compared == 8 * candidates


@pytest.mark.slow
@pytest.mark.parametrize("code_path", ["COMPATIBLE", "AVX2"])
def test_golden_parity_holds_on_every_mkl_code_path(golden, code_path):
    """MKL rounds float32 exp differently per CPU type; reference mode must not depend on it."""
    if not torch.backends.mkl.is_available():
        pytest.skip("torch is built without MKL")
    script = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from conftest import Golden, load_reference_weights\n"
        "from masn.model.official import forward_official\n"
        "g = Golden(__import__('pathlib').Path(sys.argv[2]), load_reference_weights(sys.argv[3]))\n"
        "out = forward_official(g.state_dict, g.head, g.data)\n"
        "print(np.abs(out - g['output']).max())\n"
    )
    env = {**os.environ, "MKL_CBWR": code_path}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(Path(__file__).parents[1]),
            str(golden.path),
            str(golden.weights_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-13
