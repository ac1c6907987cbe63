"""The `masn` command line."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

import masn
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
