"""CLIP features through the whole pipeline: `masn extract --appearance clip-vit-b16` writes a
store of CLIP's widths, MASN trains on it, and `masn answer` answers a video with it (random
CLIP weights; the network itself is checked against open_clip in tests/extract/networks)."""

from __future__ import annotations

import json

import pytest

from masn.extract.store.reader import FeatureStore
from masn.pipeline.cli import main
from masn.pipeline.training.checkpoint import load_predictor
from tests.builders import TINY_FLAGS, write_clip

CLIP_WIDTHS = {"appearance": 512, "appearance_objects": 768, "motion": 2048, "motion_objects": 2048}


@pytest.mark.slow
def test_clip_features_are_extracted_trained_on_and_answered_with(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    names = [f"clip{i}.mp4" for i in range(3)]
    for i, name in enumerate(names):
        write_clip(videos / name, "libx264", 12, list(range(i, i + 24)))
    store = tmp_path / "clip.h5"
    extract = ["extract", "--videos", str(videos), "--out", str(store), "--random-weights"]
    extract += ["--appearance", "clip-vit-b16", *TINY_FLAGS, "--device", "cpu", "--workers", "0"]
    assert main(extract) == 0
    with FeatureStore(store) as features:
        assert features.widths == CLIP_WIDTHS
        assert features.provenance.config["appearance"] == "clip-vit-b16"
        assert features.read(names[0]).appearance_objects.shape[-1] == 768

    questions = tmp_path / "questions"
    questions.mkdir()
    for split, chosen in (("train", names[:2]), ("test", names[2:])):
        rows = [{"video": name, "question": "what moves?", "answer": "square"} for name in chosen]
        rows += [{"video": name, "question": "what colour?", "answer": "red"} for name in chosen]
        (questions / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    train = ["train", "--task", "custom", "--annotations", str(questions), "--features", str(store)]
    train += ["--out", str(run), "--glove", "random", "--hidden", "32", "--epochs", "1"]
    assert main([*train, "--device", "cpu", "--workers", "0"]) == 0
    predictor = load_predictor(run / "best.pt")
    assert predictor.model.config.widths == CLIP_WIDTHS
    assert predictor.features.extraction_config().appearance == "clip-vit-b16"

    capsys.readouterr()
    ask = ["answer", str(videos / names[2]), "what colour?", "--checkpoint", str(run / "best.pt")]
    assert main([*ask, "--device", "cpu", "--out", str(tmp_path / "answer.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] in ("square", "red") and result["random_weights"] is True
    assert result["sampled_frames"] >= 1 and (tmp_path / "answer.png").is_file()
