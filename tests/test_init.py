"""The package's face: ``import masn`` stays light and its API names resolve on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import masn
from tests.builders import child_env


def test_import_masn_loads_no_torch():
    code = "import sys, masn; print(masn.__version__, 'torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [masn.__version__, "False"]


def test_every_api_name_resolves_to_its_home():
    from masn.extract.run.one_video import Extractor, extract_video
    from masn.pipeline.answering.trained_model import TrainedModel, load

    assert set(dir(masn)) == set(masn.__all__)
    assert (masn.Extractor, masn.extract_video) == (Extractor, extract_video)
    assert (masn.TrainedModel, masn.load) == (TrainedModel, load)
    for name in masn.__all__:
        assert getattr(masn, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = masn.missing
