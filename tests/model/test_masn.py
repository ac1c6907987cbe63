"""Behaviour of the MASN network: fixed-mode invariances, batching, gradients, ablations, heads."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from masn.model import MASN, MASNConfig, VideoFeatures
from masn.model.heads import MultipleChoiceHead
from masn.model.masking import length_mask

SMALL = {
    "vocab_size": 50,
    "word_dim": 16,
    "hidden": 32,
    "appearance_dim": 24,
    "appearance_objects_dim": 28,  # object and global features of a role may differ in width
    "motion_dim": 20,
    "location_dim": 8,
    "glimpses": 2,
    "attention_rank": 2,
}
OBJECTS, WIDTH = 3, 12


def make_model(seed: int = 0, **overrides) -> MASN:
    torch.manual_seed(seed)
    options = {**SMALL, "task": "open_ended", "num_answers": 7, **overrides}
    return MASN(MASNConfig(**options)).double().eval()


def make_video(lengths: list[int], frames: int, config: MASNConfig, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)

    def features(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    video = VideoFeatures(
        appearance=features(b, frames, config.appearance_dim),
        motion=features(b, frames, config.motion_dim),
        appearance_objects=features(b, frames, OBJECTS, config.appearance_objects_dim),
        motion_objects=features(b, frames, OBJECTS, config.motion_objects_dim),
        boxes=torch.rand(b, frames, OBJECTS, 6, generator=g, dtype=torch.float64),
        lengths=torch.tensor(lengths),
    )
    return zero_padding(video)


def zero_padding(video: VideoFeatures) -> VideoFeatures:
    frames = video.appearance.shape[1]
    keep = (torch.arange(frames) < video.lengths.unsqueeze(1)).double()
    return VideoFeatures(
        appearance=video.appearance * keep[..., None],
        motion=video.motion * keep[..., None],
        appearance_objects=video.appearance_objects * keep[..., None, None],
        motion_objects=video.motion_objects * keep[..., None, None],
        boxes=video.boxes * keep[..., None, None],
        lengths=video.lengths,
    )


def make_questions(lengths, width: int = WIDTH, seed: int = 2):
    lengths = torch.as_tensor(lengths)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, SMALL["vocab_size"], (*lengths.shape, width), generator=g)
    return tokens * (torch.arange(width) < lengths.unsqueeze(-1)), lengths


def select(video: VideoFeatures, index) -> VideoFeatures:
    return VideoFeatures(*(getattr(video, f.name)[index] for f in dataclasses.fields(video)))


def run(model: MASN, video, tokens, lengths):
    with torch.no_grad():
        return model(video, tokens, lengths).output


# --- fixed mode: padding and batch partners change nothing ------------------------------------


def test_padded_frames_change_nothing_whatever_they_hold():
    model = make_model()
    video = make_video([6, 2, 4], frames=6, config=model.config)
    tokens, lengths = make_questions([5, 12, 3])
    reference = run(model, video, tokens, lengths)

    noise = make_video([10, 10, 10], frames=10, config=model.config, seed=9)
    valid = torch.arange(6) < video.lengths.unsqueeze(1)
    for name in ("appearance", "motion", "appearance_objects", "motion_objects", "boxes"):
        getattr(noise, name)[:, :6][valid] = getattr(video, name)[valid]
    noise.lengths = video.lengths
    torch.testing.assert_close(run(model, noise, tokens, lengths), reference, rtol=0, atol=1e-12)


def test_padded_words_change_nothing_whatever_they_hold():
    model = make_model()
    video = make_video([6, 2, 4], frames=6, config=model.config)
    tokens, lengths = make_questions([5, 12, 3])
    reference = run(model, video, tokens, lengths)
    wider = torch.randint(2, SMALL["vocab_size"], (3, 20))
    wider[:, :WIDTH] = torch.where(
        torch.arange(WIDTH) < lengths.unsqueeze(1), tokens, wider[:, :WIDTH]
    )
    torch.testing.assert_close(run(model, video, wider, lengths), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("task", ["open_ended", "count", "multiple_choice"])
def test_sample_output_does_not_depend_on_batch_partners(task):
    model = make_model(task=task)
    _train_fusion_norms(model)
    video = make_video([6, 1, 4, 3], frames=6, config=model.config)
    shape = [[12, 2, 7, 4, 9], [1, 3, 3, 3, 3], [5, 5, 5, 5, 12], [2, 2, 2, 2, 2]]
    tokens, lengths = make_questions(shape if task == "multiple_choice" else [12, 1, 5, 2])
    together = run(model, video, tokens, lengths)
    for i in range(4):
        alone = run(model, select(video, [i]), tokens[[i]], lengths[[i]])
        torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-12)


def test_reference_mode_keeps_the_official_batch_dependence():
    """With trained (distinct) fusion norms the official sum over padded rows leaks L."""
    model = make_model(mode="reference")
    _train_fusion_norms(model)
    video = make_video([6, 3], frames=6, config=model.config)
    tokens, lengths = make_questions([3, 12])
    together = run(model, video, tokens, lengths)
    alone = run(model, select(video, [0]), tokens[[0]], lengths[[0]])
    assert (alone[0] - together[0]).abs().max() > 1e-6


def _train_fusion_norms(model: MASN) -> None:
    """Makes the three fusion LayerNorms differ, as training does (at init they are equal)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for attention in model.fusion.attentions.values():
            attention.norm.weight.add_(0.3 * torch.randn(attention.norm.weight.shape, generator=g))
            attention.norm.bias.add_(0.3 * torch.randn(attention.norm.bias.shape, generator=g))


@pytest.mark.parametrize("mode", ["fixed", "reference"])
@pytest.mark.parametrize("task", ["open_ended", "count", "multiple_choice"])
def test_batch_size_one(mode, task):
    model = make_model(task=task, mode=mode)
    video = make_video([4], frames=5, config=model.config)
    tokens, lengths = make_questions([[3, 12, 1, 5, 6]] if task == "multiple_choice" else [7])
    output = run(model, video, tokens, lengths)
    expected = {"open_ended": (1, 7), "count": (1,), "multiple_choice": (1, 5)}[task]
    assert output.shape == expected and torch.isfinite(output).all()


# --- reference-mode quirks that fixed mode repairs ---------------------------------------------


def test_last_frame_of_a_full_video_is_ignored_only_in_reference_mode():
    for mode, ignored in (("reference", True), ("fixed", False)):
        model = make_model(mode=mode)
        video = make_video([5, 3], frames=5, config=model.config)
        tokens, lengths = make_questions([4, 6])
        before = run(model, video, tokens, lengths)
        video.appearance_objects[0, 4] += 1.0
        video.motion[0, 4] += 1.0
        after = run(model, video, tokens, lengths)
        assert torch.equal(before, after) == ignored, mode


def test_input_projections_train_only_in_fixed_mode():
    for mode, trainable in (("fixed", True), ("reference", False)):
        model = make_model(mode=mode)
        for stream in model.streams.values():
            assert stream.object_proj.weight.requires_grad == trainable
            assert stream.global_proj.weight.requires_grad == trainable


def test_length_mask_reproduces_the_official_off_by_one():
    lengths = torch.tensor([3, 5, 9])
    assert length_mask(lengths, 5).sum(1).tolist() == [3, 5, 5]
    assert length_mask(lengths, 5, reference=True).sum(1).tolist() == [3, 4, 4]


# --- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["open_ended", "count", "multiple_choice"])
def test_gradients_reach_every_trainable_parameter(task):
    model = make_model(task=task).float().train()
    video = make_video([6, 2, 4], frames=6, config=model.config)
    video = video.to(dtype=torch.float32)
    shape = [[5, 12, 3, 4, 4], [2, 2, 9, 1, 3], [7, 7, 7, 7, 7]]
    tokens, lengths = make_questions(shape if task == "multiple_choice" else [5, 12, 3])
    target = {
        "open_ended": torch.tensor([1, 4, 6]),
        "count": torch.tensor([1.0, 4.0, 10.0]),
        "multiple_choice": torch.tensor([0, 3, 4]),
    }[task]
    model.loss(model(video, tokens, lengths).output, target).backward()
    frozen = {"question.embedding.weight"}
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert not parameter.requires_grad and parameter.grad is None
            continue
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_reference_mode_leaves_input_projections_without_gradients():
    model = make_model(mode="reference").train()
    video = make_video([6, 2], frames=6, config=model.config)
    tokens, lengths = make_questions([5, 12])
    model.loss(model(video, tokens, lengths).output, torch.tensor([1, 2])).backward()
    for name, parameter in model.named_parameters():
        projection = name.endswith(("object_proj.weight", "global_proj.weight"))
        assert (parameter.grad is None) == (projection or name == "question.embedding.weight"), name


# --- multiple choice -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fixed", "reference"])
def test_batched_multiple_choice_equals_five_single_passes(mode):
    model = make_model(task="multiple_choice", mode=mode)
    _train_fusion_norms(model)
    video = make_video([6, 1, 4], frames=6, config=model.config)
    tokens, lengths = make_questions([[12, 2, 7, 4, 9], [1, 3, 3, 12, 3], [5, 5, 6, 5, 2]])
    batched = run(model, video, tokens, lengths)
    single = torch.stack(
        [run(model, video, tokens[:, [c]], lengths[:, [c]])[:, 0] for c in range(5)], dim=1
    )
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_video_branch_runs_once_for_all_candidates():
    model = make_model(task="multiple_choice")
    calls = []
    for stream in model.streams.values():
        stream.graph.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    video = make_video([6, 1, 4], frames=6, config=model.config)
    tokens, lengths = make_questions([[12, 2, 7, 4, 9], [1, 3, 3, 12, 3], [5, 5, 6, 5, 2]])
    run(model, video, tokens, lengths)
    assert calls == [(3, 6 * OBJECTS, SMALL["hidden"])] * 2


def test_multiple_choice_hinge_loss_matches_pairwise_definition():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 5, generator=g)
    answers = torch.randint(0, 5, (6,), generator=g)
    expected = sum(
        max(0.0, 1.0 + float(scores[i, j] - scores[i, answers[i]]))
        for i in range(6)
        for j in range(5)
        if j != answers[i]
    ) / (6 * 4)
    loss = MultipleChoiceHead(4).loss(scores, answers)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


# --- heads ---------------------------------------------------------------------------------------


def test_count_prediction_rounds_half_to_even_and_clamps():
    model = make_model(task="count")
    output = torch.tensor([0.4, 1.5, 2.5, 10.6, -3.0, 6.49])
    assert model.predict(output).tolist() == [1, 2, 2, 10, 1, 6]
    assert model.loss(output, torch.ones(6)).item() == pytest.approx(
        F.mse_loss(output, torch.ones(6)).item()
    )


def test_open_ended_loss_and_prediction():
    model = make_model()
    logits = torch.randn(4, 7)
    answers = torch.tensor([0, 6, 3, 3])
    assert model.loss(logits, answers).item() == pytest.approx(
        F.cross_entropy(logits, answers).item()
    )
    assert model.predict(logits).tolist() == logits.argmax(1).tolist()


# --- ablations (Table 3) -------------------------------------------------------------------------


def _perturbed(video: VideoFeatures, *names: str) -> VideoFeatures:
    changed = dataclasses.replace(video)
    for name in names:
        setattr(changed, name, getattr(video, name) + 0.5)
    return zero_padding(changed)


APPEARANCE = ("appearance", "appearance_objects")
MOTION = ("motion", "motion_objects")


@pytest.mark.parametrize(
    ("streams", "ignored", "used"),
    [("appearance", MOTION, APPEARANCE), ("motion", APPEARANCE, MOTION)],
)
def test_single_stream_ablation_ignores_the_other_stream(streams, ignored, used):
    model = make_model(streams=streams)
    assert list(model.streams) == [streams] and model.fusion is None
    video = make_video([6, 3], frames=6, config=model.config)
    tokens, lengths = make_questions([5, 8])
    out = model(video, tokens, lengths)
    assert out.alpha is None
    assert torch.equal(run(model, _perturbed(video, *ignored), tokens, lengths), out.output)
    assert not torch.equal(run(model, _perturbed(video, *used), tokens, lengths), out.output)


@pytest.mark.parametrize(
    ("fusion", "attentions"),
    [
        ("full", ["appearance", "motion", "all"]),
        ("dual", ["appearance", "motion"]),
        ("single", ["all"]),
        ("none", []),
    ],
)
def test_fusion_ablations_keep_exactly_their_attentions(fusion, attentions):
    model = make_model(fusion=fusion)
    full = make_model(fusion="full")
    video = make_video([6, 3], frames=6, config=model.config)
    tokens, lengths = make_questions([5, 8])
    with torch.no_grad():
        out = model(video, tokens, lengths, return_attention=True)
    extra = set(full.state_dict()) - set(model.state_dict())
    if fusion == "none":
        assert model.fusion is None and out.alpha is None
        assert extra == {k for k in full.state_dict() if k.startswith("fusion.")}
    else:
        assert list(model.fusion.attentions) == attentions == list(out.attention)
        assert out.alpha.shape == (2, len(attentions))
        torch.testing.assert_close(out.alpha.sum(1), torch.ones(2, dtype=torch.float64))
        dropped = {"appearance", "motion", "all"} - set(attentions)
        assert extra == {
            k
            for k in full.state_dict()
            if any(k.startswith(f"fusion.attentions.{a}.") for a in dropped)
        }
    for names in (APPEARANCE, MOTION):  # both streams still matter
        assert not torch.equal(run(model, _perturbed(video, *names), tokens, lengths), out.output)


def test_fusion_attention_maps_respect_stream_keys():
    model = make_model()
    video = make_video([6, 3], frames=6, config=model.config)
    tokens, lengths = make_questions([5, 8])
    with torch.no_grad():
        maps = model(video, tokens, lengths, return_attention=True).attention
    half = WIDTH  # word rows per stream: the token width
    assert maps["appearance"][..., half:].abs().max() == 0
    assert maps["motion"][..., :half].abs().max() == 0
    for name, attention in maps.items():
        rows = attention[0].sum(-1)  # sample 0 has 5 valid words per half
        valid = torch.cat([torch.arange(half) < 5] * 2)
        torch.testing.assert_close(rows[valid], torch.ones(10, dtype=torch.float64), msg=name)
        assert rows[~valid].abs().max() == 0


# --- numerics and input checking ------------------------------------------------------------------


def test_bf16_autocast_stays_close_to_fp32():
    model = make_model().float()
    video = make_video([6, 2, 4], frames=6, config=model.config).to(dtype=torch.float32)
    tokens, lengths = make_questions([5, 12, 3])
    exact = run(model, video, tokens, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = run(model, video, tokens, lengths).float()
    assert (fast - exact).abs().max() / exact.abs().max() < 0.05


def test_adjacency_logits_stay_float32_under_autocast():
    model = make_model(appearance_objects_dim=SMALL["appearance_dim"]).float()
    graph = model.streams["appearance"].graph
    nodes = torch.randn(2, 9, SMALL["hidden"])
    mask = torch.ones(2, 9, dtype=torch.bool)
    exact = graph.adjacency(nodes, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = graph.adjacency(nodes, mask)
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().max() < 0.05


def test_dropconnect_is_random_in_training_and_off_in_eval():
    model = make_model()
    projection = model.streams["appearance"].object_proj
    x = torch.randn(4, SMALL["appearance_objects_dim"], dtype=torch.float64)
    assert torch.equal(projection(x), projection(x))
    projection.train()
    assert not torch.equal(projection(x), projection(x))


@pytest.mark.parametrize(
    ("tokens", "lengths", "message"),
    [
        (torch.ones(2, 5, dtype=torch.long), torch.tensor([0, 3]), r"lengths must lie in \[1, 5\]"),
        (torch.ones(2, 5, dtype=torch.long), torch.tensor([6, 3]), r"lengths must lie in \[1, 5\]"),
        (torch.ones(2, 5, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long), r"\(B, S\)"),
        (torch.ones(3, 5, dtype=torch.long), torch.ones(3, dtype=torch.long), "3 questions for 2"),
    ],
)
def test_bad_questions_get_clear_errors(tokens, lengths, message):
    model = make_model()
    video = make_video([4, 2], frames=4, config=model.config)
    with pytest.raises(ValueError, match=message):
        model(video, tokens, lengths)


@pytest.mark.parametrize(
    "overrides",
    [{"task": "yes_no"}, {"mode": "official"}, {"streams": "audio"}, {"num_answers": 1}],
)
def test_invalid_configs_are_rejected(overrides):
    with pytest.raises(ValueError):
        MASNConfig(**{**SMALL, **overrides})


def test_config_round_trips_through_dict():
    config = MASNConfig(**SMALL, task="count", fusion="dual")
    assert MASNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown MASN config fields"):
        MASNConfig.from_dict({**config.to_dict(), "layers": 3})
