"""Training, evaluation and resume on synthetic collections whose answers are planted in the
features (examples/planted.py): the whole `masn train` / `masn evaluate` path on a CPU."""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from masn import settings
from masn.errors import InvalidInput
from masn.extract.store.official_transfer import export_official
from masn.model import MASN, MASNConfig
from masn.pipeline.cli import main
from masn.pipeline.examples.planted import write_synthetic
from masn.pipeline.qa.loading import loader
from masn.pipeline.training.checkpoint import load_checkpoint, load_predictor
from masn.pipeline.training.distributed import Process
from masn.pipeline.training.divergence import Diverged
from masn.pipeline.training.evaluate import run_evaluate
from masn.pipeline.training.settings import EvaluateSettings, TrainSettings
from masn.pipeline.training.trainer import Trainer, adam, train, training_task
from tests.builders import child_env, masn_command

HEADS = ("open_ended", "count", "multiple_choice")
# Small and fast: planted answers are learnt in a few epochs at a higher learning rate.
FAST = {
    "task": "custom",
    "glove": "random",
    "hidden": 64,
    "lr": 1e-3,
    "batch_size": 16,
    "workers": 0,
    "device": "cpu",
    "log_every": 5,
}


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("synthetic")
    return {head: write_synthetic(root / head, head, seed=1) for head in HEADS}


@pytest.fixture(scope="module")
def trained(collections, tmp_path_factory) -> dict[str, dict]:
    """One short training run per head (shared by several tests)."""
    root = tmp_path_factory.mktemp("runs")
    reports = {}
    for head in HEADS:
        annotations, store = collections[head]
        config = TrainSettings(
            **FAST,
            annotations=str(annotations),
            features=str(store),
            out=str(root / head),
            epochs=8,
        )
        reports[head] = train(config)
    return reports


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_planted_answers_are_learnt_by_every_head(trained):
    oe, count, mc = trained["open_ended"], trained["count"], trained["multiple_choice"]
    chance_oe = 100 / 6
    assert oe["test"]["accuracy"] > 4 * chance_oe, oe
    assert mc["test"]["accuracy"] > 3.5 * 20, mc
    # Answers 1..6 uniformly: always saying 3 or 4 gives an MSE of about 2.5-3.
    assert count["test"]["mse"] < 1.0, count
    for head, report in trained.items():
        train_losses = [e["loss"] for e in _events(Path(report["run"])) if e["event"] == "train"]
        assert train_losses[-1] < 0.5 * train_losses[0], (head, train_losses)


@pytest.mark.slow
def test_run_folder_holds_checkpoints_logs_and_report(trained):
    run = Path(trained["open_ended"]["run"])
    report = json.loads((run / "report.json").read_text())
    assert report == json.loads(json.dumps(trained["open_ended"]))
    assert report["selected_on"] == "val" and report["processes"] == 1
    assert report["questions"] == {"train": 224, "val": 48, "test": 48}
    events = _events(run)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    assert all("test" not in e for e in epochs)  # the test split is not looked at per epoch
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    best = load_checkpoint(run / "best.pt")
    assert best["info"]["epoch"] == report["selected_epoch"]
    last = load_checkpoint(run / "last.pt")
    assert last["loop"]["epoch"] == 8 and "optimizer" in last
    predictor = load_predictor(run / "best.pt")
    assert predictor.answers is not None and len(predictor.answers) == 6
    assert predictor.frames == 20 and predictor.tokenizer == "clean"


@pytest.mark.slow
def test_evaluate_writes_metrics_predictions_and_the_answer_only_baseline(trained, tmp_path):
    for head in HEADS:
        run = Path(trained[head]["run"])
        report = run_evaluate(
            EvaluateSettings(checkpoint=run / "best.pt", out=tmp_path / head, device="cpu")
        )
        recorded = settings.load(EvaluateSettings, tmp_path / head / "config.yaml")
        assert recorded.out == tmp_path / head and recorded.checkpoint == run / "best.pt"
        assert report["masn"] == trained[head]["test"]
        lines = [
            json.loads(x) for x in (tmp_path / head / "predictions.jsonl").read_text().splitlines()
        ]
        assert len(lines) == report["masn"]["questions"] == 48
        accuracy = 100 * sum(line["correct"] for line in lines) / len(lines)
        assert accuracy == pytest.approx(report["masn"]["accuracy"], abs=1e-3)
        if head == "open_ended":
            assert all(line["prediction"] == line["top"][0][0] for line in lines)
        if head == "multiple_choice":
            baseline = report["answer_only_baseline"]
            # Planted candidates are balanced: the candidates alone carry no answer.
            assert baseline["chance"] == 20.0 and baseline["accuracy"] < 45
            assert trained[head]["answer_only_baseline"]["questions"] == 48
        else:
            assert "answer_only_baseline" not in report


def test_count_metric_uses_the_papers_clamp_and_zero_to_one_mapping():
    from masn.pipeline.training.metrics import Tally

    tally = Tally(count=True)
    # Labels arrive as max(answer, 1): a TGIF "0" is a 1.
    tally.add(
        torch.tensor([1, 3, 10]), torch.tensor([1.0, 5.0, 10.0]), torch.zeros(3, dtype=torch.long)
    )
    summary = tally.summary()
    assert summary["mse"] == pytest.approx((0 + 4 + 0) / 3, abs=1e-4)
    assert summary["accuracy"] == pytest.approx(200 / 3, abs=1e-3)


def test_early_stopping_and_test_selection(collections, tmp_path):
    annotations, store = collections["open_ended"]
    config = TrainSettings(
        **{**FAST, "lr": 1e-30},  # a learning rate must be positive; this one changes nothing
        annotations=str(annotations),
        features=str(store),
        out=str(tmp_path / "run"),
        epochs=6,
        patience=2,
        select_on="test",
    )
    report = train(config)
    # Nothing changes at lr 1e-30: the first epoch stays best and two more epochs end the run.
    assert report["stopped_early"] and report["epochs_run"] == 3
    assert report["selected_epoch"] == 1 and report["selected_on"] == "test"
    epochs = [e for e in _events(tmp_path / "run") if e["event"] == "epoch"]
    assert all("test" in e and "val" in e for e in epochs)


def test_a_run_folder_is_never_overwritten_and_resume_keeps_settings(collections, tmp_path):
    annotations, store = collections["open_ended"]
    common = {**FAST, "annotations": str(annotations), "features": str(store)}
    out = str(tmp_path / "run")
    train(TrainSettings(**common, out=out, epochs=1))
    with pytest.raises(ValueError, match="--resume"):
        train(TrainSettings(**common, out=out, epochs=2))
    with pytest.raises(ValueError, match="hidden"):
        train(TrainSettings(**{**common, "hidden": 32}, out=out, epochs=2, resume=True))
    report = train(TrainSettings(**common, out=out, epochs=2, resume=True))
    assert report["epochs_run"] == 2


def _train_args(annotations: Path, store: Path, out: Path, *extra: str) -> list[str]:
    """`masn train` arguments for a synthetic collection with the FAST settings."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items() if k != "task"]
    paths = ["--annotations", str(annotations), "--features", str(store), "--out", str(out)]
    return ["train", "--task", "custom", *paths, *flags, *extra]


def _train_command(annotations: Path, store: Path, out: Path, *extra: str) -> list[str]:
    return masn_command(*_train_args(annotations, store, out, *extra))


def _run(command: list[str]) -> None:
    """Runs a training command to its end (an error shows its output)."""
    subprocess.run(command, check=True, env=child_env(), capture_output=True, timeout=300)


@pytest.mark.slow
def test_kill_and_resume_ends_exactly_like_an_uninterrupted_run(collections, tmp_path):
    annotations, store = collections["multiple_choice"]
    extra = ("--epochs=3", "--save-every=5")
    straight = tmp_path / "straight"
    _run(_train_command(annotations, store, straight, *extra))

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _train_command(annotations, store, killed, *extra),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (killed / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = load_checkpoint(killed / "last.pt")["loop"]
    assert interrupted["global_step"] >= 5 and not (killed / "report.json").exists()

    _run(_train_command(annotations, store, killed, *extra, "--resume"))
    first = json.loads((straight / "report.json").read_text())
    second = json.loads((killed / "report.json").read_text())
    for field in ("val", "test", "selected_epoch", "answer_only_baseline"):
        assert first[field] == second[field], field
    a = load_checkpoint(straight / "best.pt")["state_dict"]
    b = load_checkpoint(killed / "best.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_process_torchrun_training_matches_one_process(collections, tmp_path):
    annotations, store = collections["open_ended"]
    extra = ("--epochs=6",)
    single = tmp_path / "single"
    _run(_train_command(annotations, store, single, *extra))
    double = tmp_path / "double"
    command = masn_command(*_train_args(annotations, store, double, *extra), processes=2)
    result = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((single / "report.json").read_text())
    two = json.loads((double / "report.json").read_text())
    assert two["processes"] == 2 and two["questions"] == one["questions"]
    # Same batches and gradient weighting; only dropout masks differ between the runs.
    assert one["test"]["accuracy"] > 80 and two["test"]["accuracy"] > 80
    assert abs(one["test"]["accuracy"] - two["test"]["accuracy"]) <= 10
    steps = [e["step"] for e in _events(double) if e["event"] == "epoch"]
    assert steps == [e["step"] for e in _events(single) if e["event"] == "epoch"]


def test_training_reads_the_official_four_file_layout(collections, tmp_path):
    annotations, store = collections["open_ended"]
    keys = {f"v{i:05d}": f"vid{i + 1}" for i in range(160)}
    export_official(store, tmp_path / "official", "msvd", keys)
    renamed = tmp_path / "annotations"
    renamed.mkdir()
    for split in ("train", "val", "test"):
        rows = [json.loads(x) for x in (annotations / f"{split}.jsonl").read_text().splitlines()]
        text = "".join(json.dumps({**row, "video": keys[row["video"]]}) + "\n" for row in rows)
        (renamed / f"{split}.jsonl").write_text(text)
    report = train(
        TrainSettings(
            **FAST,
            annotations=str(renamed),
            features=str(tmp_path / "official"),
            out=str(tmp_path / "run"),
            epochs=6,
        )
    )
    assert report["questions"]["train"] == 224
    assert report["test"]["accuracy"] > 60


def test_missing_videos_are_reported_never_zero_filled(collections, tmp_path, caplog):
    annotations, store = collections["open_ended"]
    rows = (annotations / "test.jsonl").read_text()
    extra = json.dumps({"video": "not-extracted", "question": "what is shown?", "answer": "cat"})
    folder = tmp_path / "annotations"
    folder.mkdir()
    for split in ("train", "val"):
        (folder / f"{split}.jsonl").write_text((annotations / f"{split}.jsonl").read_text())
    (folder / "test.jsonl").write_text(rows + extra + "\n")
    report = train(
        TrainSettings(
            **FAST, annotations=str(folder), features=str(store), out=str(tmp_path / "r"), epochs=1
        )
    )
    assert report["questions"]["test"] == 48
    assert "1 of 49 questions (1 videos) have no features" in caplog.text
    assert "'not-extracted'" in caplog.text


def test_cli_train_and_evaluate(collections, tmp_path, capsys):
    annotations, store = collections["count"]
    out = tmp_path / "run"
    code = main(_train_args(annotations, store, out, "--epochs", "1"))
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "custom" and "mse" in report["test"]
    recorded = settings.load(TrainSettings, out / "config.yaml")
    assert (recorded.task, recorded.epochs, recorded.out) == ("custom", 1, out)
    # The run folder stands for its best.pt.
    assert main(["evaluate", "--checkpoint", str(out), "--device", "cpu", "--workers", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["masn"] == report["test"]
    assert (out / "evaluate-test" / "predictions.jsonl").is_file()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


def _store_for(keys: list[str], path: Path) -> Path:
    """Random features (4 frames, 2 objects, 16-d) for ``keys``."""
    import numpy as np

    from masn.extract.store.schema import VideoRecord
    from masn.extract.store.writer import StoreWriter

    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([10.0, 10.0, 50.0, 40.0], np.float32), (4, 2, 1))
    with StoreWriter(path, {"test": "tgif"}, {"test": "none"}) as writer:
        for key in keys:
            writer.write(
                VideoRecord(
                    key=key,
                    appearance=rng.standard_normal((4, 16), np.float32),
                    appearance_objects=rng.standard_normal((4, 2, 16), np.float32),
                    motion=rng.standard_normal((4, 16), np.float32),
                    motion_objects=rng.standard_normal((4, 2, 16), np.float32),
                    box_geometry=VideoRecord.geometry_from_boxes(boxes, 100, 100),
                )
            )
        writer.consolidate()
    return path


@pytest.mark.parametrize("task", ["action", "count"])
def test_tgif_tasks_train_on_real_annotation_rows(shared_dir, tmp_path, task, caplog):
    """Real TGIF-QA rows (the first 300 of the test file, standing in for train and test) with
    features for the GIFs of 200 of them: the rest are reported missing, the run completes."""
    from masn.datasets.tgif import read_tgif

    source = shared_dir / "data" / "tgif-qa" / f"Test_{task}_question.csv"
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:301]
    folder = tmp_path / "tgif-qa"
    folder.mkdir()
    for split in ("Train", "Test"):
        (folder / f"{split}_{task}_question.csv").write_text("".join(lines), encoding="utf-8")
    rows = read_tgif(folder / f"Test_{task}_question.csv", task)
    keys = {row.keys[0] for row in rows[:200]}
    store = _store_for(sorted(keys), tmp_path / "tgif.h5")
    config = TrainSettings(
        task=task,
        annotations=str(folder),
        features=str(store),
        out=str(tmp_path / "run"),
        glove="random",
        hidden=32,
        epochs=1,
        workers=0,
        device="cpu",
    )
    report = train(config)
    with_features = sum(row.keys[0] in keys for row in rows)
    assert report["questions"]["test"] == with_features < 300
    assert f"{300 - with_features} of 300 questions" in caplog.text
    assert report["questions"]["train"] + report["questions"]["val"] == with_features
    if task == "action":
        assert report["answer_only_baseline"]["questions"] == report["questions"]["test"]
    else:
        assert report["test"]["mse"] is not None


def test_word_vectors_come_from_any_glove_file_and_are_cached(collections, tmp_path):
    """A 50-d GloVe text file: its rows become the frozen embedding, cached in the run folder."""
    import numpy as np

    annotations, store = collections["open_ended"]
    rng = np.random.default_rng(3)
    vectors = {word: rng.standard_normal(50).astype(np.float32) for word in ("what", "shown", "?")}
    glove = tmp_path / "glove.6B.50d.txt"
    glove.write_text(
        "".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in vectors.items())
    )
    config = TrainSettings(
        **{**FAST, "glove": str(glove)},
        annotations=str(annotations),
        features=str(store),
        out=str(tmp_path / "run"),
        epochs=1,
    )
    train(config)
    predictor = load_predictor(tmp_path / "run" / "best.pt")
    embedding = predictor.model.question.embedding.weight
    assert embedding.shape[1] == 50 and not embedding.requires_grad
    for word, vector in vectors.items():
        row = embedding[predictor.vocabulary.ids([word])[0]]
        assert torch.allclose(row, torch.from_numpy(vector), atol=1e-6)
    assert (tmp_path / "run" / "word_vectors.npy").is_file()


# --- ranges and divergence ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"frames": 0}, "--frames"),
        ({"batch_size": 0}, "--batch-size"),
        ({"workers": -1}, "--workers"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"lr": float("inf")}, "--lr"),
        ({"epochs": 0}, "--epochs"),
        ({"patience": 0}, "--patience"),
        ({"val_fraction": 1.0}, "--val-fraction"),
        ({"hidden": 63}, "--hidden"),
        ({"hidden": 0}, "--hidden"),
        ({"dropout": 1.0}, "--dropout"),
        ({"save_every": -1}, "--save-every"),
        ({"log_every": 0}, "--log-every"),
        ({"answers_top": 1}, "--answers-top"),
    ],
)
def test_train_config_refuses_values_out_of_range(values, flag):
    with pytest.raises(InvalidInput, match=f"^{flag} must be"):
        TrainSettings(**values)


def test_zero_frames_or_batch_size_is_an_error_never_the_default(tmp_path, caplog):
    for flag in ("--frames", "--batch-size"):
        caplog.clear()
        assert main(["train", "--task", "count", "--out", str(tmp_path / "run"), flag, "0"]) == 2
        assert f"{flag} must be at least 1" in caplog.text
    assert not (tmp_path / "run").exists()
    for arguments, flag in (({"batch_size": 0}, "--batch-size"), ({"workers": -1}, "--workers")):
        with pytest.raises(InvalidInput, match=f"^{flag} must be at least"):
            run_evaluate(EvaluateSettings(checkpoint=tmp_path / "best.pt", **arguments))


def _finite(path: Path) -> bool:
    state = load_checkpoint(path)["state_dict"]
    return all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point())


def test_a_non_finite_loss_stops_training_naming_step_and_questions(
    collections, tmp_path, monkeypatch, caplog
):
    """A NaN loss at step 17 (epoch 2 of 14-step epochs) is seen at the next log point (step
    20): exit 2 with one line naming the step and the batch; the epoch-1 checkpoints survive."""
    annotations, store = collections["count"]
    out = tmp_path / "run"
    loss, calls = MASN.loss, []
    batches: dict[int, list[str]] = {}
    step = Trainer.train_step

    def poisoned(self, output, targets):
        calls.append(1)
        value = loss(self, output, targets)
        return value * float("nan") if len(calls) == 17 else value

    def recorded(self, batch, share=1.0):
        rows = self.data.splits["train"].rows
        batches[self.state.global_step + 1] = [rows[i].source for i in batch.index.tolist()]
        return step(self, batch, share)

    monkeypatch.setattr(MASN, "loss", poisoned)
    monkeypatch.setattr(Trainer, "train_step", recorded)
    assert main(_train_args(annotations, store, out, "--epochs", "3")) == 2
    message = caplog.records[-1].getMessage()
    assert "\n" not in message and "at step 17 (epoch 2)" in message, message
    lines = [source.rpartition(":")[2] for source in batches[17]]
    assert f"{annotations / 'train.jsonl'} lines {', '.join(lines[:8])} and 8 more" in message
    assert "lower --lr (now 0.001)" in message
    assert f"{out / 'last.pt'} holds the state after epoch 1" in message
    assert max(batches) == 20  # stopped at the first log point after the bad step
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last["loop"]["epoch"] == 1 and last["loop"]["global_step"] == 14
    assert best["info"]["epoch"] == 1
    assert _finite(out / "last.pt") and _finite(out / "best.pt")
    events = [e["event"] for e in _events(out)]
    assert events == ["train", "train", "train", "epoch", "train"]  # steps 5, 10, 14, -, 15
    assert all(math.isfinite(e["loss"]) for e in _events(out) if e["event"] == "train")


def test_non_finite_weights_or_metrics_are_never_saved(collections, tmp_path, monkeypatch):
    """Epochs without steps (so the test is fast): epoch 1 is saved; in epoch 2 a weight turns
    NaN (or the validation metric does) and the run stops before writing anything."""
    annotations, store = collections["open_ended"]
    evaluate_split = Trainer._evaluate

    def train_epoch(self, dataset, sampler):
        if self.state.epoch == 1 and poison == "weights":
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("nan")
        return 0

    def evaluate(self, split):
        summary = evaluate_split(self, split)
        return {**summary, "accuracy": float("nan")} if self.state.epoch == 1 else summary

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    for poison, words in (("weights", "weights are not finite"), ("metrics", "metrics after")):
        out = tmp_path / poison
        config = TrainSettings(
            **FAST, annotations=str(annotations), features=str(store), out=str(out), epochs=3
        )
        with pytest.raises(Diverged, match=f"{words}.*epoch 2") as caught:
            train(config)
        assert f"{out / 'best.pt'} the model of epoch 1" in str(caught.value)
        assert load_checkpoint(out / "last.pt")["loop"]["epoch"] == 1
        assert load_checkpoint(out / "best.pt")["info"]["epoch"] == 1
        assert _finite(out / "last.pt") and _finite(out / "best.pt")


@pytest.mark.gpu
def test_the_divergence_watch_never_waits_for_the_gpu(collections, tmp_path):
    """The loop's step and its non-finite-loss note run under CUDA's sync debug mode."""
    annotations, store = collections["count"]
    config = TrainSettings(
        **{**FAST, "device": "cuda"},
        annotations=str(annotations),
        features=str(store),
        out=str(tmp_path / "run"),
    )
    trainer = Trainer(config, training_task(config), Process(), torch.device("cuda"))
    dataset, sampler = trainer.train_data()
    batches = [
        b.to(trainer.device)
        for b in itertools.islice(loader(dataset, sampler, trainer.loading, trainer.device), 2)
    ]
    trainer.train_step(batches[0])  # first call: lazy CUDA/cuDNN initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = trainer.train_step(batches[1])
        trainer.state.global_step += 1
        trainer.watch.note(loss, batches[1], trainer.state)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.watch.check_losses(trainer.state)


def test_adam_step_reads_nothing_back_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    model = MASN(MASNConfig(vocab_size=10, task="open_ended", num_answers=4, hidden=16))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(trainable, 1e-3)
    for parameter in trainable:
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()  # the first step creates the state
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or item(self))
    before = [p.detach().clone() for p in trainable]
    optimizer.step()
    assert reads == [] and len(trainable) > 100
    assert all(not torch.equal(a, b) for a, b in zip(before, trainable, strict=True))
