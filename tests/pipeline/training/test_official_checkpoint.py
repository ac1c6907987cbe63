"""The authors' checkpoints with their vocabulary pickles, imported as masn checkpoints: they
answer through the same path as our models, with the official model's outputs and ids."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import masn
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import VideoRecord
from masn.model.official import forward_official, read_official_checkpoint
from masn.pipeline.cli import main
from masn.pipeline.qa.questions import encode_question
from masn.pipeline.qa.text import official_tokens, tokeniser
from masn.pipeline.training.checkpoint import load_predictor
from tests.builders import synthetic_record, write_store
from tests.model.official_replica import MASN as OfficialMASN
from tests.model.official_replica import save_official_checkpoint

WORDS = ("#START#", "UNK", "what", "is", "the", "man", "doing", "\\?", "dog", "a", "ball")
ANSWERS = ("run", "jump", "dance", "sit")
QUESTION = "What is the man doing?"
T = 20  # TGIF-QA's sampled frames


def write_official(folder: Path, task: str, answers: tuple[str, ...] | None) -> Path:
    """An official checkpoint (a pickled module, as the authors saved it) and its --vc_dir."""
    torch.manual_seed(0)
    model = OfficialMASN(len(WORDS), len(answers) if answers else None, T, hidden=32)
    checkpoint = folder / f"{task}_50.00.pth"
    save_official_checkpoint(model, checkpoint)
    vocabulary = folder / "vocab"
    vocabulary.mkdir()
    tables = {
        "word_to_index": {w: i for i, w in enumerate(WORDS)},
        "index_to_word": dict(enumerate(WORDS)),
        "vocab_embedding": model.glove.weight.detach().numpy(),
    }
    if answers:
        tables["ans_to_index"] = {a: i for i, a in enumerate(answers)}
        tables["index_to_ans"] = dict(enumerate(answers))
    for kind, table in tables.items():
        with open(vocabulary / f"{kind}_{task}.pkl", "wb") as file:
            pickle.dump(table, file)
    return checkpoint


def import_command(checkpoint: Path, task: str, out: Path) -> list[str]:
    vocabulary = checkpoint.parent / "vocab"
    return ["model", "import-official", "--checkpoint", str(checkpoint),
            "--vocabulary", str(vocabulary), "--task", task, "--out", str(out)]  # fmt: skip


def official_inputs(record: VideoRecord, ids: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """One question on ``record`` as the official loader feeds it: T frames, zero-padded."""

    def padded(array: np.ndarray) -> np.ndarray:
        full = np.zeros((T, *array.shape[1:]), dtype=np.float64)
        full[: len(array)] = array
        return full[None]

    return {
        "res_avg": padded(record.appearance),
        "i3d_avg": padded(record.motion),
        "res_obj": padded(record.appearance_objects),
        "i3d_obj": padded(record.motion_objects),
        "bbox": padded(record.box_geometry),
        "video_length": np.array([len(record.appearance)]),
        "tokens": ids[None],
        "lengths": np.array([length]),
    }


def test_an_imported_model_answers_as_the_official_one(tmp_path, capsys):
    checkpoint = write_official(tmp_path, "FrameQA", ANSWERS)
    out = tmp_path / "runs" / "official" / "best.pt"
    assert main(import_command(checkpoint, "frameqa", out)) == 0
    assert capsys.readouterr().out.strip() == str(out)
    predictor = load_predictor(out)
    assert predictor.vocabulary.words == WORDS and predictor.answers.answers == ANSWERS
    assert (predictor.tokenizer, predictor.frames, predictor.sampling) == ("official", T, "first")
    assert predictor.model.config.mode == "reference" and predictor.spec.name == "frameqa"
    assert predictor.info["official_task"] == "FrameQA"
    assert len(predictor.info["checkpoint_sha256"]) == 64

    # The question reads as the official code reads it: its tokens, its ids.
    tokens = official_tokens(QUESTION)
    assert tokens == ["what", "is", "the", "man", "doing", "\\?"]
    ids, length = encode_question(QUESTION, (), predictor.vocabulary, tokeniser("official"))
    assert ids[:length].tolist() == [WORDS.index(token) for token in tokens]

    # masn.load(run folder).answer == the official forward on the same padded inputs.
    record = synthetic_record("video.mp4", frames=5)
    result = masn.load(out.parent, device="cpu").answer(record, QUESTION)

    inputs = official_inputs(record, ids, length)
    logits = forward_official(read_official_checkpoint(checkpoint), "open_ended", inputs)[0]
    scores = torch.from_numpy(logits).softmax(-1).numpy()
    order = np.argsort(-scores)
    assert result.answer == ANSWERS[order[0]]
    assert [text for text, _ in result.top] == [ANSWERS[i] for i in order]
    np.testing.assert_allclose([s for _, s in result.top], scores[order], atol=1e-5)


def test_a_multiple_choice_model_needs_no_answer_pickles(tmp_path):
    checkpoint = write_official(tmp_path, "Action", None)
    out = tmp_path / "action.pt"
    assert main(import_command(checkpoint, "action", out)) == 0
    model = masn.load(out, device="cpu")
    assert (model.head, model.answers) == ("multiple_choice", ())
    result = model.answer(synthetic_record("v", frames=3), QUESTION, ["run", "jump", "sit"])
    assert result.answer in ("run", "jump", "sit") and len(result.top) == 3


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop_word", r"has 10 words but the checkpoint .* has 11 GloVe rows"),
        ("other_embedding", r"GloVe rows of .*vocab_embedding_FrameQA\.pkl differ"),
        ("disagree", r"word_to_index_FrameQA\.pkl and index_to_word disagree"),
        ("missing", r"no ans_to_index_FrameQA\.pkl in .*vocab: pass the official --vc_dir"),
        ("evil", r"refusing to load .*index_to_word_FrameQA\.pkl.*system"),
    ],
)
def test_a_vocabulary_that_does_not_fit_is_refused(tmp_path, caplog, damage, message):
    checkpoint = write_official(tmp_path, "FrameQA", ANSWERS)
    vocabulary = tmp_path / "vocab"

    def rewrite(kind: str, table: object) -> None:
        with open(vocabulary / f"{kind}_FrameQA.pkl", "wb") as file:
            pickle.dump(table, file)

    if damage == "drop_word":
        rewrite("word_to_index", {w: i for i, w in enumerate(WORDS[:-1])})
        rewrite("index_to_word", dict(enumerate(WORDS[:-1])))
        (vocabulary / "vocab_embedding_FrameQA.pkl").unlink()
    elif damage == "other_embedding":
        rewrite("vocab_embedding", np.ones((len(WORDS), 300), dtype=np.float32))
    elif damage == "disagree":
        rewrite("word_to_index", {w: (i + 1) % len(WORDS) for i, w in enumerate(WORDS)})
    elif damage == "missing":
        (vocabulary / "ans_to_index_FrameQA.pkl").unlink()
    else:
        rewrite("index_to_word", Evil())
    out = tmp_path / "out.pt"
    assert main(import_command(checkpoint, "frameqa", out)) == 2
    assert caplog.records[-1].message.count("\n") == 0
    assert re.search(message, caplog.text)
    assert not out.exists()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_masn_evaluate_scores_an_imported_model_like_the_official_forward(tmp_path):
    """TGIF-QA FrameQA files and a store of six GIFs: every prediction of `masn evaluate` is the
    official model's argmax on the same (stored) features and token ids."""
    checkpoint = write_official(tmp_path, "FrameQA", ANSWERS)
    out = tmp_path / "official.pt"
    assert main(import_command(checkpoint, "frameqa", out)) == 0
    annotations = tmp_path / "tgif-qa"
    annotations.mkdir()
    header = "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription"
    gifs = [f"tumblr_{index}" for index in range(6)]
    for split in ("Train", "Test"):
        lines = [header] + [
            f"{gif}\twhat is the man doing ?\t{ANSWERS[i % 4]}\t0\tFRAMEQA{i}\t{i}\ta man ."
            for i, gif in enumerate(gifs)
        ]
        (annotations / f"{split}_frameqa_question.csv").write_text("\n".join(lines) + "\n")
    store = write_store(tmp_path / "tgif.h5", [synthetic_record(gif, frames=3) for gif in gifs])
    report = tmp_path / "evaluation"
    command = ["evaluate", "--checkpoint", str(out), "--annotations", str(annotations),
               "--features", str(store), "--out", str(report), "--device", "cpu",
               "--workers", "0"]  # fmt: skip
    assert main(command) == 0
    predictions = [json.loads(line) for line in (report / "predictions.jsonl").open()]
    assert len(predictions) == 6
    official = read_official_checkpoint(checkpoint)
    ids, length = encode_question("what is the man doing ?", (), load_predictor(out).vocabulary,
                                  tokeniser("official"))  # fmt: skip
    with FeatureStore(store) as features:
        for line in predictions:
            record = features.read(line["video"])
            logits = forward_official(official, "open_ended", official_inputs(record, ids, length))
            assert line["prediction"] == ANSWERS[int(np.argmax(logits[0]))], line["video"]
