"""Who is calling: advice in flags on the command line and in keywords in Python, quiet, once."""

from __future__ import annotations

import logging

import pytest
import torch

from masn import caller, progress
from masn.caller import option
from masn.errors import InvalidInput
from masn.runtime import resolve_device


def test_advice_names_flags_on_the_command_line_and_keywords_in_python():
    cases = [
        (("random_weights", True), "--random-weights", "random_weights=True"),
        (("device", "cpu"), "--device cpu", "device='cpu'"),
        (("weights",), "--weights", "weights"),
        (("post_nms_top_n", 4), "--proposals 4", "post_nms_top_n=4"),
        (
            ("candidates", ["answer one", "answer two", ...]),
            "--candidates 'answer one' 'answer two' ...",
            "candidates=['answer one', 'answer two', ...]",
        ),
    ]
    for arguments, flag, keyword in cases:
        spelt = {"flag": "--proposals"} if arguments[0] == "post_nms_top_n" else {}
        assert option(*arguments, **spelt) == keyword
        with caller.command_line():
            assert option(*arguments, **spelt) == flag
        assert not caller.on_command_line()


def test_library_errors_speak_to_their_caller(monkeypatch):
    """The same check says ``device='cpu'`` to Python and ``--device cpu`` to `masn`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidInput) as python:
        resolve_device("cuda")
    with caller.command_line(), pytest.raises(InvalidInput) as command_line:
        resolve_device("cuda")
    assert str(python.value).startswith("device='cuda': this PyTorch")
    assert "use device='cpu'" in str(python.value) and "--" not in str(python.value)
    assert str(command_line.value).startswith("--device cuda: this PyTorch")
    assert "use --device cpu" in str(command_line.value)


def test_a_banner_is_said_once_per_command_and_once_in_python(caplog):
    from masn.extract.networks.feature_networks import announce_random_weights

    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with caller.command_line():
                announce_random_weights("first cause")
                announce_random_weights("second cause")
    assert caplog.text.count("RANDOM WEIGHTS") == 2 and "second cause" not in caplog.text
    assert caller.first_time("a python-only banner")
    assert not caller.first_time("a python-only banner")


def test_quiet_hides_progress_bars():
    with caller.command_line(quiet=True):
        assert progress.bar(total=3).disable
    with caller.command_line():
        assert not progress.bar(total=3).disable
    assert not progress.bar(total=3).disable
