"""The `masn` command line."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import logging
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
import yaml

import masn
from masn import settings
from masn.extract.settings import ExtractionConfig, ExtractSettings, RunOptions
from masn.pipeline import cli
from masn.pipeline.cli import main
from masn.settings import Checked


def test_console_script_lists_subcommands():
    script = Path(sys.executable).with_name("masn")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "bench" in result.stdout


def test_bench_model_prints_the_report_as_json(capsys):
    assert main(["bench", "model", "--steps", "1", "--warmup", "0", "--cases", "count"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "model_training_step" and report["size"] == "small"
    (result,) = report["results"]
    assert result["task"] == "count" and result["batch"] == 32
    assert result["samples_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert report["official_h100_samples_per_s"] == {"frameqa": 477, "count": 486, "action": 54}


def test_setup_errors_end_with_a_message_not_a_traceback(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "no-weights-here"))
    (tmp_path / "clip.mp4").write_bytes(b"")  # listed, never decoded: the weights are missing
    code = main(["extract", "--videos", str(tmp_path), "--out", str(tmp_path / "x.h5")])
    assert code == 2
    assert "masn weights fetch" in caplog.text and "Traceback" not in caplog.text


def test_output_into_a_closed_pipe_ends_quietly():
    """``masn train --help | head -1``: the reader goes away, masn exits 141 without a trace."""
    for line in (["--help"], ["train", "--help"]):
        child = subprocess.Popen(
            [sys.executable, "-m", "masn", *line], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        child.stdout.close()  # before masn writes: its first write meets a closed pipe
        assert child.wait(timeout=60) == 141, line
        assert child.stderr.read() == b"", line
        child.stderr.close()


def test_help_of_every_command_imports_no_torch():
    script = (
        "import contextlib, sys\n"
        "from masn.pipeline import cli\n"
        "assert cli.main(['--help']) == 0\n"
        "for name in cli.COMMANDS:\n"
        "    module = cli._module(name)\n"
        "    for action in getattr(module, 'ACTIONS', {None: None}):\n"
        "        line = [name] + ([action] if action else []) + ['--help']\n"
        "        with contextlib.suppress(SystemExit):\n"
        "            cli.main(line)\n"
        "heavy = [m for m in ('torch', 'torchvision', 'cv2', 'av', 'h5py') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout
    for flag in ("--proposals", "--retry-failed", "--select-on", "--candidates", "--minutes"):
        assert flag in result.stdout


def _settings_classes():
    for name in cli.COMMANDS:
        module = cli._module(name)
        for command in getattr(module, "ACTIONS", {"": getattr(module, "COMMAND", None)}).values():
            yield command.settings


def _documented_fields(kind: type) -> tuple[set[str], set[str]]:
    """Field names of a dataclass and those followed by an attribute docstring."""
    body = ast.parse(textwrap.dedent(inspect.getsource(kind))).body[0].body
    names, documented = set(), set()
    for statement, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(statement, ast.AnnAssign):
            names.add(statement.target.id)
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                documented.add(statement.target.id)
    return names, documented


def test_every_flag_has_help_and_every_settings_class_checks_itself():
    seen = set()
    todo = list(_settings_classes())
    while todo:
        kind = todo.pop()
        if kind in seen:
            continue
        seen.add(kind)
        assert issubclass(kind, Checked), kind
        nested = {
            f.name
            for f in dataclasses.fields(kind)
            if f.default_factory is not dataclasses.MISSING
            and dataclasses.is_dataclass(f.default_factory)
        }
        names, documented = _documented_fields(kind)
        undocumented = names - documented - nested
        assert not undocumented, f"{kind.__name__}: fields without help: {undocumented}"
        todo += [f.default_factory for f in dataclasses.fields(kind) if f.name in nested]
    assert len(seen) >= 17


def test_print_config_round_trips_and_flags_override_the_config(tmp_path, capsys):
    assert main(["train", "--task", "count", "--lr", "3e-4", "-q", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "task: count\n" in printed and "lr: 0.0003\n" in printed
    config = tmp_path / "run.yaml"
    config.write_text(printed)
    assert main(["train", "--config", str(config), "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["-v", "train", f"--config={config}", "--lr", "1e-3", "--print-config"]) == 0
    again = capsys.readouterr().out
    assert again == printed.replace("lr: 0.0003\n", "lr: 0.001\n")
    nested = tmp_path / "extract.json"
    nested.write_text('{"out": "x.h5", "videos": "v", "features": {"detector": {"min_size": 96}}}')
    assert main(["extract", "--config", str(nested), "--proposals", "12", "--print-config"]) == 0
    extract = yaml.safe_load(capsys.readouterr().out)
    detector = extract["features"]["detector"]
    assert (detector["min_size"], detector["post_nms_top_n"], detector["max_size"]) == (
        96,
        12,
        1000,
    )
    assert extract["run"]["device"] == "auto" and extract["out"] == "x.h5"


def test_version_quiet_anywhere_and_one_line_mistakes(capsys, caplog):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"masn {masn.__version__}"
    assert main(["train", "--frames", "0", "-q"]) == 2
    assert "--frames must be at least 1" in caplog.text
    caplog.clear()
    assert main(["extract", "--out", "x.h5", "--min-size", "0"]) == 2
    assert len(caplog.records) == 1 and "min_size must be a whole number" in caplog.text
    caplog.clear()
    assert main(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in caplog.text
    caplog.clear()
    assert main(["train", "--config", "/no/such/run.yaml"]) == 2
    assert "no config file at /no/such/run.yaml" in caplog.text


def test_renamed_flags_and_positional_forms_still_work_with_a_warning(caplog):
    _, settings, _ = cli.parse(["show", "key", "--store", "s.h5", "--out", "k.png"])
    assert settings.features == Path("s.h5") and "--store is deprecated" in caplog.text
    _, settings, _ = cli.parse(["weights", "list", "--cache=/tmp/w"])
    assert settings.weights == Path("/tmp/w")
    line = ["features", "import-official", "in", "st.h5", "--dataset", "msvd"]
    _, settings, _ = cli.parse(line)
    assert (settings.official, settings.out, settings.dataset) == (
        Path("in"),
        Path("st.h5"),
        "msvd",
    )
    assert "argument form is deprecated" in caplog.text


def test_ctrl_c_is_one_line_with_the_command_that_goes_on_and_exit_130(monkeypatch, caplog):
    """Every command: KeyboardInterrupt ends in one line, no traceback, exit 130; the rerun
    line is the command as typed, with --resume added for masn train."""
    from masn.pipeline.commands import evaluate, train

    def interrupted(settings):
        raise KeyboardInterrupt

    for module in (evaluate, train):
        monkeypatch.setattr(module, "COMMAND", dataclasses.replace(module.COMMAND, run=interrupted))
    assert main(["evaluate", "--checkpoint", "my run/best.pt", "-q"]) == 130
    (record,) = caplog.records
    assert record.getMessage() == (
        "interrupted; the work already saved is kept: to go on, run "
        "masn evaluate --checkpoint 'my run/best.pt' -q"
    )
    assert not record.exc_info
    caplog.clear()
    assert main(["train", "--task", "count", "--out", "r"]) == 130
    assert caplog.records[-1].getMessage().endswith("masn train --task count --out r --resume")


def test_errors_are_one_plain_line_with_timestamps_only_under_verbose():
    line = [sys.executable, "-m", "masn", "train", "--frames", "0"]
    plain = subprocess.run(line, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr == "error: --frames must be at least 1 (or left out), got 0\n"
    verbose = subprocess.run([*line, "-v"], capture_output=True, text=True, timeout=120)
    first = verbose.stderr.splitlines()[0]
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    message = re.escape("--frames must be at least 1 (or left out), got 0")
    assert re.fullmatch(f"{stamp} ERROR masn: {message}", first)


def test_plain_lines_name_warnings_and_errors_only():
    formatter = cli.PlainFormatter()

    def record(level: int) -> logging.LogRecord:
        return logging.LogRecord("masn.x", level, __file__, 1, "said %s", ("this",), None)

    assert formatter.format(record(logging.INFO)) == "said this"
    assert formatter.format(record(logging.WARNING)) == "warning: said this"
    assert formatter.format(record(logging.ERROR)) == "error: said this"


def test_print_config_prints_the_values_the_command_will_use(capsys):
    assert main(["train", "--task", "count", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["out"] == str(Path("runs/count").resolve())
    assert printed["annotations"] == str(Path("data/tgif-qa").resolve())
    assert printed["features"] == str(Path("features/tgif.h5").resolve())
    assert (printed["frames"], printed["batch_size"], printed["sampling"]) == (20, 32, "first")
    assert (printed["head"], printed["tokenizer"], printed["precision"]) == (
        "count",
        "clean",
        "fp32",
    )
    assert printed["glove"].endswith("glove.42B.300d.zip") and printed["workers"] >= 0
    assert main(["demo", "--quick", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["epochs"] == 2


def test_print_config_without_required_values_prints_a_template(tmp_path, capsys, caplog):
    assert main(["extract", "--proposals", "12", "--print-config"]) == 0
    template = capsys.readouterr().out
    printed = yaml.safe_load(template)
    assert printed["out"] is None and printed["features"]["detector"]["post_nms_top_n"] == 12
    assert caplog.messages == ["the template leaves open what the command needs: --out"]
    caplog.clear()
    assert main(["answer", "clip.mp4", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["video"], printed["question"], printed["checkpoint"]) == (
        "clip.mp4",
        None,
        None,
    )
    assert caplog.messages == [
        "the template leaves open what the command needs: QUESTION, --checkpoint"
    ]
    # The template, completed by flags, runs; without them its open values are still required.
    path = tmp_path / "extract.yaml"
    path.write_text(template)
    _, parsed, printed = cli.parse(
        ["extract", "--config", str(path), "--out", "y.h5", "--videos", "v"]
    )
    assert printed is None and parsed.out == Path("y.h5")
    assert parsed.features.detector.post_nms_top_n == 12
    with pytest.raises(SystemExit):
        cli.parse(["extract", "--config", str(path), "--videos", "v"])


def test_answer_takes_a_feature_stores_settings_record_as_config(tmp_path, caplog):
    """`masn extract` records its settings in the store; `masn answer --config` takes them."""
    features = ExtractionConfig(frame_size=64, sample_every=12)
    record = ExtractSettings(
        out=tmp_path / "s.h5",
        videos=tmp_path,
        random_weights=True,
        seed=3,
        features=features,
        run=RunOptions(decoder="pyav", workers=0),
    )
    path = tmp_path / "store-settings.yaml"
    path.write_text(settings.dump(record))
    line = ["answer", "clip.mp4", "what?", "--checkpoint", "run", "--config", str(path)]
    _, answer, printed = cli.parse(line)
    assert printed is None and answer.features == features and answer.out is None
    assert (answer.random_weights, answer.seed, answer.video) == (True, 3, Path("clip.mp4"))
    assert caplog.messages == [
        "the config is a feature store's settings record (masn extract): its extraction "
        "settings apply; left out: dataset, mapping, merge, out, run, videos"
    ]


def test_help_states_each_default_once(capsys):
    """A setting whose None the command decides states its default in its help; tyro's
    "(default: None)" is left out there (``masn.settings.Decided``), and kept elsewhere."""
    seen, todo = set(), list(_settings_classes())
    while todo:
        kind = todo.pop()
        if kind in seen:
            continue
        seen.add(kind)
        hints = typing.get_type_hints(kind, include_extras=True)
        docs = _field_docs(kind)
        for field in dataclasses.fields(kind):
            if dataclasses.is_dataclass(field.default_factory):
                todo.append(field.default_factory)
            if field.default is not None:
                continue
            marked = "help_behavior_hint=''" in repr(hints[field.name])
            stated = "default" in docs.get(field.name, "").lower()
            assert marked == stated, f"{kind.__name__}.{field.name}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "Run folder (default runs/<task>). --glove" in shown
    assert "(default: None)" not in shown and "(default: 0.0001)" in shown


def _field_docs(kind: type) -> dict[str, str]:
    """Each field's attribute docstring."""
    body = ast.parse(textwrap.dedent(inspect.getsource(kind))).body[0].body
    return {
        statement.target.id: following.value.value
        for statement, following in zip(body, [*body[1:], None], strict=True)
        if isinstance(statement, ast.AnnAssign)
        and isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
    }
