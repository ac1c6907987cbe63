"""Input standardisation (MASNConfig.standardize): buffers, arithmetic, padding, checkpoints."""

from __future__ import annotations

import pytest
import torch

from masn.model import MASN, MASNConfig
from masn.model.scaling import SCALED_FIELDS, FeatureScaling
from tests.model.test_masn import make_model, make_questions, make_video


def _statistics(config: MASNConfig, seed: int = 3) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: (torch.randn(width, generator=g), 0.5 + torch.rand(width, generator=g))
        for name, width in config.widths.items()
    }


def test_off_by_default_leaves_the_network_and_its_state_unchanged() -> None:
    plain = make_model(standardize=False)
    default = make_model()
    assert default.scaling is None and plain.scaling is None
    assert list(default.state_dict()) == list(plain.state_dict())
    assert not any("scaling" in name for name in default.state_dict())
    # The scaling module draws no random numbers: the other weights are the same either way.
    scaled = make_model(standardize=True)
    for name, value in default.state_dict().items():
        assert torch.equal(scaled.state_dict()[name], value), name


def test_scaling_standardises_each_field_and_keeps_padded_frames_zero() -> None:
    model = make_model(standardize=True)
    config = model.config
    statistics = _statistics(config)
    model.scaling.set_statistics(statistics)
    video = make_video([4, 2], frames=4, config=config)
    scaled = model.scaling(video)
    for name in SCALED_FIELDS:
        mean, std = statistics[name]
        raw, out = getattr(video, name), getattr(scaled, name)
        expected = (raw[0] - mean.double()) / std.double()
        torch.testing.assert_close(out[0], expected)
        torch.testing.assert_close(out[1, :2], (raw[1, :2] - mean.double()) / std.double())
        assert torch.count_nonzero(out[1, 2:]) == 0
    assert torch.equal(scaled.boxes, video.boxes) and torch.equal(scaled.lengths, video.lengths)


def test_the_model_reads_standardised_features() -> None:
    """A standardising model answers on raw features what a plain model with the same weights
    answers on features standardised beforehand."""
    scaled_model = make_model(standardize=True)
    statistics = _statistics(scaled_model.config)
    scaled_model.scaling.set_statistics(statistics)
    plain = make_model()
    weights = {k: v for k, v in scaled_model.state_dict().items() if not k.startswith("scaling.")}
    plain.load_state_dict(weights)
    video = make_video([3, 3], frames=3, config=plain.config)
    tokens, lengths = make_questions([5, 3])
    expected = plain(scaled_model.scaling(video), tokens, lengths).output
    torch.testing.assert_close(scaled_model(video, tokens, lengths).output, expected)


def test_statistics_travel_with_the_state_dict() -> None:
    model = make_model(standardize=True)
    model.scaling.set_statistics(_statistics(model.config))
    copy = MASN(MASNConfig.from_dict(model.config.to_dict())).double()
    copy.load_state_dict(model.state_dict())
    for name in SCALED_FIELDS:
        for part in ("mean", "std"):
            key = f"scaling.{name}_{part}"
            assert torch.equal(copy.state_dict()[key], model.state_dict()[key])


def test_statistics_are_checked() -> None:
    widths = {"appearance": 4, "appearance_objects": 5, "motion": 3, "motion_objects": 2}
    scaling = FeatureScaling(widths)
    good = {name: (torch.zeros(width), torch.ones(width)) for name, width in widths.items()}
    with pytest.raises(ValueError, match="no statistics"):
        scaling.set_statistics({k: v for k, v in good.items() if k != "motion"})
    with pytest.raises(ValueError, match="shape"):
        scaling.set_statistics({**good, "motion": (torch.zeros(4), torch.ones(4))})
    with pytest.raises(ValueError, match="positive"):
        scaling.set_statistics({**good, "appearance": (torch.zeros(4), torch.zeros(4))})
    scaling.set_statistics(good)
    assert torch.equal(scaling.motion_std, torch.ones(3))
