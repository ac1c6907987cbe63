"""The paper configs (configs/): one per published result, each with the paper's settings and
its figure, which the dataset modules know too; `masn train --config` runs one on real
TGIF-QA questions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from masn import settings
from masn.datasets import all_tasks
from masn.datasets.splits import load_splits
from masn.pipeline.cli import main
from masn.pipeline.training.settings import TrainSettings
from tests.builders import synthetic_record, write_store

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FIGURE = re.compile(r"^# MASN \(Seo et al\., ACL 2021\) on .+: ([0-9.]+) (%|test MSE)")


def configs() -> dict[str, TrainSettings]:
    return {
        path.stem: settings.load(TrainSettings, path) for path in sorted(CONFIGS.glob("*.yaml"))
    }


def test_one_config_per_published_result_with_the_papers_figure_and_settings():
    loaded = configs()
    published = {name for name, task in all_tasks().items() if task.published is not None}
    assert {config.task for config in loaded.values()} == published
    for name, config in loaded.items():
        task = all_tasks()[config.task]
        first = (CONFIGS / f"{name}.yaml").read_text().splitlines()[0]
        figure, unit = FIGURE.match(first).groups()
        assert float(figure) == task.published.value, name
        assert unit == ("test MSE" if task.published.metric == "mse" else "%")
        assert (config.frames, config.batch_size) == (task.frames, task.batch_size), name
        assert (config.mode, config.tokenizer, config.lr) == ("reference", "official", 1e-4)
        assert (config.hidden, config.dropout, config.select_on) == (512, 0.3, "test")
        if task.answer_top is not None:
            assert config.answers_top == task.answer_top
            assert config.out_of_set == "reference"


def test_print_config_of_a_paper_config_keeps_its_settings_and_round_trips(capsys, tmp_path):
    """--print-config shows the file's settings with the defaults decided; printed again from
    what it printed, nothing changes."""
    config = CONFIGS / "tgif-frameqa.yaml"
    assert main(["train", "--config", str(config), "--print-config"]) == 0
    printed = capsys.readouterr().out
    resolved = yaml.safe_load(printed)
    assert yaml.safe_load(config.read_text()).items() <= resolved.items()
    decided = ("annotations", "features", "out", "glove", "head", "tokenizer", "workers")
    assert None not in [resolved[name] for name in decided]
    assert Path(resolved["out"]).is_absolute() and resolved["batch_size"] == 32
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    assert main(["train", "--config", str(again), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.slow
def test_a_paper_config_trains_on_real_tgif_questions(shared_dir, tmp_path):
    """The Count config on the published Count questions, with synthetic features for the GIFs
    of 8 questions of each split (the other questions have no features and are left out): one
    epoch, the paper's figure reported beside the measured one."""
    annotations = shared_dir / "data" / "tgif-qa"
    spec = all_tasks()["count"]
    rows = load_splits(spec, annotations, seed=999)
    keys = {row.keys[0] for split in rows.values() for row in split[:8]}
    store = write_store(tmp_path / "tgif.h5", [synthetic_record(key, frames=3) for key in keys])
    out = tmp_path / "run"
    flags = ["--annotations", str(annotations), "--features", str(store), "--out", str(out)]
    flags += ["--epochs", "1", "--glove", "random", "--device", "cpu", "--workers", "0"]
    flags += ["--hidden", "64"]  # the paper's 512 costs 5 s a CPU forward pass
    code = main(["train", "--config", str(CONFIGS / "tgif-count.yaml"), *flags, "--no-baseline"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["selected_on"] == "test" and report["questions"]["test"] > 0
    paper = report["paper"]
    assert (paper["metric"], paper["paper"]) == ("mse", 3.75)
    assert paper["measured"] == report["test"]["mse"]
    recorded = settings.load(TrainSettings, out / "config.yaml")
    assert (recorded.mode, recorded.frames, recorded.epochs, recorded.hidden) == (
        "reference",
        20,
        1,
        64,
    )
