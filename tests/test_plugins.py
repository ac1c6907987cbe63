"""A separately installed package adds a motion network, its weights format and a dataset
without editing masn, and masn uses them through its real paths: the command line's choices,
the backbone builder, weights verification, installation and strict loading, extraction keyed
the plugin's way, and training on the plugin's question files. Also what is refused: an entry
point naming an undecorated object, and a name two packages declare.

The plugins are real projects (pyproject.toml, setuptools) installed with pip into folders of
their own; child processes see them through PYTHONPATH, never through the shared virtual
environment. The project the test writes is the worked example of docs/extending.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from masn.extract.run.failure_log import failures_path
from masn.extract.store.reader import FeatureStore
from masn.pipeline.training.checkpoint import load_checkpoint
from masn.registry import entry_points
from masn.weights.manifest import load_manifest
from tests.builders import TINY_FLAGS, child_env, masn_command, write_clip

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "masn-toy"
version = "1.0"
dependencies = ["masn"]

[tool.setuptools]
packages = ["masn_toy"]

[project.entry-points."masn.backbones.motion"]
toy-motion = "masn_toy.network:toy_motion"

[project.entry-points."masn.weights_formats"]
toy_npz = "masn_toy.weights:convert_toy_npz"

[project.entry-points."masn.datasets"]
toyqa = "masn_toy.dataset:DATASET"
"""

NETWORK = '''\
"""ToyMotion: a tiny motion network, clips -> (global (B, 6), objects (B, N, 4))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from masn.errors import InvalidInput
from masn.extract.networks.backbones import backbone
from masn.extract.networks.regions import pool_regions

TIME_STRIDE = 2


class ToyMotion(nn.Module):
    """One 3-D convolution (2 x 8 x 8 cells) to a 4-channel map: its mean over time is pooled
    at the boxes (objects, 4 wide), its mean over space projected to 6 (global)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 4, (TIME_STRIDE, 8, 8), stride=(TIME_STRIDE, 8, 8))
        self.head = nn.Linear(4, 6)
        self.widths = (6, 4)  # global, objects

    def forward(self, clips: Tensor, boxes: Tensor, frame_sizes: Tensor) -> tuple[Tensor, Tensor]:
        x = clips.permute(0, 4, 1, 2, 3).float() / 255.0
        maps = torch.relu(self.stem(x)).mean(dim=2)
        return self.head(maps.mean(dim=(2, 3))), pool_regions(maps, boxes, frame_sizes)


@backbone("toy-motion", role="motion")
def toy_motion(config) -> ToyMotion:
    """ToyMotion; its clips need at least TIME_STRIDE frames."""
    if config.clip_length < TIME_STRIDE:
        raise InvalidInput(f"--clip-length must be >= {TIME_STRIDE} for toy-motion")
    return ToyMotion()
'''

WEIGHTS = '''\
"""The toy_npz format: ToyMotion's published .npz archive, TensorFlow layouts and names."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from masn.errors import InvalidInput
from masn.weights.formats.registry import weights_format

SHAPES = {
    "stem/kernel": (2, 8, 8, 3, 4),  # time, height, width, in, out
    "stem/bias": (4,),
    "head/kernel": (4, 6),  # in, out
    "head/bias": (6,),
}


@weights_format("toy_npz", role="motion", backbone="toy-motion")
def convert_toy_npz(path: Path) -> dict[str, torch.Tensor]:
    """The archive's arrays as ToyMotion's state dict; every name and shape checked."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InvalidInput(f"{path} is not a toy_npz archive ({error})") from None
    if set(arrays) != set(SHAPES):
        raise InvalidInput(f"{path}: expected arrays {sorted(SHAPES)}, found {sorted(arrays)}")
    for name, shape in SHAPES.items():
        if arrays[name].shape != shape:
            raise InvalidInput(f"{path}: {name} is {arrays[name].shape}, expected {shape}")
    tensor = {name: torch.from_numpy(array.astype(np.float32)) for name, array in arrays.items()}
    return {
        "stem.weight": tensor["stem/kernel"].permute(4, 3, 0, 1, 2).contiguous(),
        "stem.bias": tensor["stem/bias"],
        "head.weight": tensor["head/kernel"].T.contiguous(),
        "head.bias": tensor["head/bias"],
    }
'''

DATASET = '''\
"""ToyQA: clips of two cameras and open-ended questions about them.

Videos: ``<camera>/clip_<n>.mp4``, keyed ``<camera>-<n>`` (n without leading zeros). Questions:
``{train,val,test}.qa``, one ``video | question | answer`` a line; blank lines and ``#``
comments are skipped; a question's type is its first word.
"""

from __future__ import annotations

import re
from pathlib import Path

from masn.datasets.annotations import AnnotationError, QARow, read_text
from masn.datasets.spec import SPLITS, Dataset, TaskSpec
from masn.datasets.video_keys import without_mapping

CLIP = re.compile(r"([a-z]+)/clip_0*([0-9]+)\\.mp4")


def key(relative: str) -> str | None:
    match = CLIP.fullmatch(relative)
    return f"{match[1]}-{match[2]}" if match else None


def read_toyqa(path: Path) -> list[QARow]:
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split("|")]
        if len(fields) != 3 or not all(fields):
            raise AnnotationError(f"{path}:{number}: expected 'video | question | answer'")
        video, question, answer = fields
        qtype = question.split()[0].lower()
        rows.append(QARow((video,), question, answer, qtype=qtype, source=f"{path}:{number}"))
    if not rows:
        raise AnnotationError(f"{path}: no questions")
    return rows


DATASET = Dataset(
    name="toyqa",
    title="ToyQA",
    tasks=(
        TaskSpec("toyqa", "toyqa", "open_ended", frames=4, batch_size=4, qtypes=("what", "where")),
    ),
    annotations="data/toyqa",
    split_files=lambda spec, folder: {split: folder / f"{split}.qa" for split in SPLITS},
    read=lambda spec, path: read_toyqa(path),
    keyer=without_mapping("toyqa", key),
    keyed="named <camera>/clip_<n>.mp4",
    video_extension=".mp4",
)
'''

# A second package: its motion network has the toy plugin's name and no @backbone.
RIVAL_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "masn-rival"
version = "1.0"

[tool.setuptools]
py-modules = ["masn_rival"]

[project.entry-points."masn.backbones.motion"]
toy-motion = "masn_rival:toy_motion"
"""
RIVAL = '''\
def toy_motion(config):
    """A builder its package forgot to decorate."""
    raise AssertionError("never called: the registry refuses it first")
'''

QUESTIONS = {
    "train": """\
        # ToyQA training questions
        north-7 | what moves on the right? | square
        north-7 | what colour is the square? | red

        south-12 | what fills the picture? | noise
        south-12 | where is the noise? | everywhere
        """,
    "val": """\
        north-7 | what colour is the square? | red
        south-12 | what fills the picture? | noise
        """,
    "test": """\
        north-7 | what moves on the right? | square
        south-12 | where is the noise? | everywhere
        south-12 | what fills the picture? | noise
        """,
}
# The child of the weights test (argv: the published file, a damaged one, the published sha256,
# the cache, where to save what was loaded): verification and installation of the plugin's
# file, then FeatureNetworks.load, as `masn extract` loads networks.
INSTALL_AND_LOAD = """
import dataclasses, json, sys
from pathlib import Path

import torch

from masn.extract.networks.backbones import build_backbone
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.settings import DetectorConfig, ExtractionConfig
from masn.weights import manifest
from masn.weights.installed import install
from masn.weights.verification import ValidationError, Verification, file_sha256, verify

published, damaged, sha256, cache, loaded = sys.argv[1:]
published, cache = Path(published), Path(cache)
config = ExtractionConfig(
    frame_size=32, motion="toy-motion", detector=DetectorConfig(min_size=32, max_size=64)
)
built = build_backbone("motion", "toy-motion", config)
entry = manifest.WeightEntry(
    name="toy-motion-kinetics", role="motion", format="toy_npz",
    urls=("https://example.org/toy-motion-kinetics.npz",), filename=published.name,
    size=published.stat().st_size, sha256=sha256, sha256_prefix=None,
    licence="CC0-1.0", page="https://example.org/toy", description="ToyMotion", default=False,
)
refused = None
try:
    verify(dataclasses.replace(entry, size=None, sha256=None), Path(damaged))
except ValidationError as error:
    refused = error.detail
cache.mkdir()
installed = install(entry, verify(entry, published), cache)

# FeatureNetworks.load loads every role: the paper's detector and ResNet-152 are installed too,
# as if fetched, as zeros shaped as their networks (one stored zero each, expanded: a few KB).
with torch.device("meta"):
    shapes = FeatureNetworks(config)
paper = {"detector": "vg-frcnn-attr-10-100", "appearance": "resnet152-imagenet-v1"}
for role, name in paper.items():
    source = cache / manifest.get(name).filename
    source.write_bytes(role.encode())
    state = {
        key: torch.zeros((), dtype=value.dtype).expand(value.shape)
        for key, value in shapes.get_submodule(role).state_dict().items()
    }
    verified = Verification(source, file_sha256(source), source.stat().st_size, "recorded", state)
    install(manifest.get(name), verified, cache)

networks = FeatureNetworks.load(config, cache)
torch.save(networks.motion.state_dict(), loaded)
print(json.dumps({
    "built": [type(built).__name__, list(built.widths)],
    "refused": refused,
    "installed": dataclasses.asdict(installed),
    "files": sorted(path.name for path in cache.glob("motion-*")),
    "weights": networks.weights["motion"],
    "widths": networks.widths,
}))
"""
# The toy network's global and object widths; the detector's and ResNet-152's (the paper's).
TOY_WIDTHS = {"motion": 6, "motion_objects": 4}
PAPER_APPEARANCE = {"appearance": 2048, "appearance_objects": 2048}


@dataclass(frozen=True)
class Background:
    """A child process started in the background, its output going to files."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @classmethod
    def start(cls, command: list[str], environment: dict[str, str], logs: Path) -> Background:
        outputs = logs.with_suffix(".out"), logs.with_suffix(".err")
        with outputs[0].open("wb") as stdout, outputs[1].open("wb") as stderr:
            process = subprocess.Popen(command, env=environment, stdout=stdout, stderr=stderr)
        return cls(process, *outputs)

    def result(self) -> subprocess.CompletedProcess[str]:
        """What the process did, once it has ended."""
        status = self.process.wait(timeout=300)
        output = self.stdout.read_text(), self.stderr.read_text()
        return subprocess.CompletedProcess(self.process.args, status, *output)

    def stop(self) -> None:
        """Ends the process if it still runs (its test was not run)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class Plugins:
    """The folders pip installed the toy plugin and its rival into, ToyQA's videos, questions
    and store, the toy network's published weights, and the two slow children, started in the
    background so that the other tests run meanwhile: the extraction of the store with the toy
    network, and the installation and loading of its weights (``INSTALL_AND_LOAD``)."""

    toy: Path
    rival: Path
    videos: Path
    questions: Path
    store: Path
    weights: dict[str, np.ndarray]
    sha256: str
    loaded: Path
    extraction: Background
    weights_check: Background


def write_project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def pip_install(project: Path, target: Path) -> subprocess.Popen[str]:
    """pip installing ``project`` into ``target`` (no index, no dependencies, the venv's
    setuptools), started."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "--disable-pip-version-check", "--target", str(target)]
    return subprocess.Popen(
        [*command, str(project)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def env(*folders: Path, **extra: str) -> dict[str, str]:
    """A child's environment that sees the packages installed in ``folders``."""
    return {**child_env(), "PYTHONPATH": os.pathsep.join(map(str, folders)), **extra}


def run(command: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def python(script: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", textwrap.dedent(script)], environment)


def choices(help_text: str, flag: str) -> set[str]:
    """The choices ``--flag {a,b,c}`` lists in ``--help``."""
    found = re.search(rf"{flag} \{{([^}}]*)\}}", help_text)
    assert found, f"{flag} has no choices in:\n{help_text}"
    return set(found[1].split(","))


def write_toyqa(root: Path) -> tuple[Path, Path]:
    """ToyQA's videos (two clips, a file without a key, one of another extension) and its
    question files."""
    videos, questions = root / "videos", root / "questions"
    (videos / "north").mkdir(parents=True)
    (videos / "south").mkdir()
    # 1.2 s: 7 frames decoded at 6 fps, 2 sampled (every 4th)
    write_clip(videos / "north" / "clip_007.mp4", "libx264", 10, list(range(12)))
    write_clip(videos / "south" / "clip_012.mp4", "libx264", 10, list(range(12)), noise=True)
    (videos / "north" / "intro.mp4").write_text("not a ToyQA clip: no key")
    (videos / "south" / "clip_003.webm").write_text("not a ToyQA file: another extension")
    questions.mkdir()
    for split, text in QUESTIONS.items():
        (questions / f"{split}.qa").write_text(textwrap.dedent(text))
    return videos, questions


def write_weights(folder: Path) -> tuple[dict[str, np.ndarray], Path, Path]:
    """ToyMotion's weights in the toy_npz format (head/bias as float64, which the converter
    turns to float32), the published file, and a damaged copy without stem/bias."""
    rng = np.random.default_rng(5)
    shapes = {"stem/kernel": (2, 8, 8, 3, 4), "stem/bias": (4,), "head/kernel": (4, 6)}
    arrays = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    arrays["head/bias"] = rng.normal(size=6)
    published, damaged = folder / "toy-motion-kinetics.npz", folder / "damaged.npz"
    np.savez(published, **arrays)
    np.savez(damaged, **{name: array for name, array in arrays.items() if name != "stem/bias"})
    return arrays, published, damaged


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugins]:
    root = tmp_path_factory.mktemp("plugins")
    toy = write_project(
        root / "masn-toy",
        {
            "pyproject.toml": PYPROJECT,
            "masn_toy/__init__.py": '"""A masn plugin: ToyMotion, its weights and ToyQA."""\n',
            "masn_toy/network.py": NETWORK,
            "masn_toy/weights.py": WEIGHTS,
            "masn_toy/dataset.py": DATASET,
        },
    )
    rival = write_project(
        root / "masn-rival", {"pyproject.toml": RIVAL_PYPROJECT, "masn_rival.py": RIVAL}
    )
    sites = root / "site-toy", root / "site-rival"
    installs = [pip_install(toy, sites[0]), pip_install(rival, sites[1])]
    videos, questions = write_toyqa(root)
    weights, published, damaged = write_weights(root)
    sha256 = hashlib.sha256(published.read_bytes()).hexdigest()
    for install in installs:
        output, _ = install.communicate(timeout=300)
        assert install.returncode == 0, output

    store, loaded = root / "toy.h5", root / "loaded.pt"
    extract = ["extract", "--videos", str(videos), "--out", str(store), "--dataset", "toyqa"]
    extract += ["--motion", "toy-motion", "--random-weights", "--device", "cpu", "--workers", "0"]
    extraction = Background.start(
        masn_command(*extract, *TINY_FLAGS), env(sites[0]), root / "extract"
    )
    arguments = [str(path) for path in (published, damaged, sha256, root / "cache", loaded)]
    weights_check = Background.start(
        [sys.executable, "-c", INSTALL_AND_LOAD, *arguments], env(sites[0]), root / "weights"
    )
    yield Plugins(
        *sites, videos, questions, store, weights, sha256, loaded, extraction, weights_check
    )
    extraction.stop()
    weights_check.stop()


def test_the_command_line_offers_the_plugin_network_and_dataset(plugins, tmp_path):
    environment = env(plugins.toy, COLUMNS="200", MASN_WEIGHTS_DIR=str(tmp_path))
    extract = run(masn_command("extract", "--help"), environment)
    assert extract.returncode == 0, extract.stderr
    motion = {*entry_points("masn.backbones.motion"), "toy-motion"}
    assert choices(extract.stdout, "--motion") == motion
    assert choices(extract.stdout, "--dataset") == {*entry_points("masn.datasets"), "toyqa"}
    assert choices(extract.stdout, "--appearance") == set(entry_points("masn.backbones.appearance"))
    train = run(masn_command("train", "--help"), environment)
    assert train.returncode == 0, train.stderr
    assert "toyqa" in choices(train.stdout, "--task")
    listing = run(masn_command("weights", "list"), environment)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.split("\n\n")[0].splitlines()[1:]]
    assert [row[0] for row in rows] == [entry.name for entry in load_manifest()]
    assert {row[-1] for row in rows} == {"missing"}  # an empty cache


def test_an_undecorated_entry_and_a_name_declared_twice_are_refused(plugins):
    undecorated = python(
        """
        from masn.extract.networks.backbones import build_backbone
        from masn.extract.settings import ExtractionConfig

        build_backbone("motion", "toy-motion", ExtractionConfig(motion="toy-motion"))
        """,
        env(plugins.rival),
    )
    assert undecorated.returncode == 1
    assert undecorated.stderr.strip().splitlines()[-1] == (
        "TypeError: the entry point toy-motion = 'masn_rival:toy_motion' (group "
        "masn.backbones.motion) names an object that is not decorated with "
        "@backbone('toy-motion', ...)"
    )
    twice = run(masn_command("extract", "--help"), env(plugins.toy, plugins.rival))
    assert twice.returncode == 1
    assert twice.stderr.strip().splitlines()[-1] == (
        "RuntimeError: 'toy-motion' is declared in the entry point group masn.backbones.motion "
        "by both masn-toy and masn-rival: uninstall one of them"
    )


def test_the_plugin_weights_are_verified_installed_and_loaded_strictly(plugins):
    """A file in the plugin's format, with a published sha256, goes through masn's verification
    (a damaged one is refused with the format's reason) and installer; FeatureNetworks.load then
    loads it strictly into the network the settings name."""
    result = plugins.weights_check.result()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["built"] == ["ToyMotion", [6, 4]]
    assert report["refused"].endswith(
        "expected arrays ['head/bias', 'head/kernel', 'stem/bias', 'stem/kernel'], found "
        "['head/bias', 'head/kernel', 'stem/kernel']"
    )
    assert report["installed"]["backbone"] == "toy-motion"
    assert report["installed"]["format"] == "toy_npz"
    assert report["files"] == ["motion-toy-motion.json", "motion-toy-motion.pt"]
    assert report["installed"]["sha256"] == plugins.sha256
    published = f"toy-motion-kinetics.npz, sha256 {plugins.sha256}"
    assert report["weights"] == f"toy-motion-kinetics ({published})"
    assert report["widths"] == {**PAPER_APPEARANCE, **TOY_WIDTHS}
    state = torch.load(plugins.loaded, weights_only=True)
    arrays = plugins.weights
    assert set(state) == {"stem.weight", "stem.bias", "head.weight", "head.bias"}
    expected = {
        "stem.weight": arrays["stem/kernel"].transpose(4, 3, 0, 1, 2),
        "stem.bias": arrays["stem/bias"],
        "head.weight": arrays["head/kernel"].T,
        "head.bias": arrays["head/bias"].astype(np.float32),
    }
    for name, values in expected.items():
        assert state[name].dtype == torch.float32
        np.testing.assert_array_equal(state[name].numpy(), values, err_msg=name)


def test_a_store_extracted_with_the_plugin_trains_on_its_questions(plugins, tmp_path):
    result = plugins.extraction.result()
    assert result.returncode == 0, result.stderr
    assert "skipped 1 video files that are not .mp4" in result.stderr
    unkeyed = f"skipped 1 .mp4 files not named <camera>/clip_<n>.mp4 under {plugins.videos}"
    assert f"{unkeyed}, e.g. north/intro.mp4" in result.stderr
    store = plugins.store
    with FeatureStore(store) as features:
        assert sorted(features.keys()) == ["north-7", "south-12"]
        assert features.widths == {**PAPER_APPEARANCE, **TOY_WIDTHS}
        assert features.provenance.config["motion"] == "toy-motion"
        north, south = features.read("north-7"), features.read("south-12")
    for record in (north, south):
        assert record.motion.shape == (2, 6) and record.motion_objects.shape == (2, 10, 4)
        assert np.isfinite(record.motion).all() and np.isfinite(record.motion_objects).all()
    assert not np.array_equal(north.motion, south.motion)  # the toy network saw the clips
    assert not failures_path(store).exists()

    run_folder = tmp_path / "run"
    train = ["train", "--task", "toyqa", "--annotations", str(plugins.questions)]
    train += ["--features", str(store)]
    train += ["--out", str(run_folder), "--glove", "random", "--hidden", "16", "--epochs", "1"]
    train += ["--workers", "0", "--device", "cpu"]
    result = run(masn_command(*train), env(plugins.toy))
    assert result.returncode == 0, result.stderr
    report = json.loads((run_folder / "report.json").read_text())
    assert report["task"] == "toyqa" and report["epochs_run"] == 1
    assert report["questions"] == {"train": 4, "val": 2, "test": 3}
    assert report["damaged_videos"] == 0
    assert 0 <= report["test"]["accuracy"] <= 100
    per_type = report["test"]["per_type"]
    assert {name: figures["questions"] for name, figures in per_type.items()} == {
        "what": 2,
        "where": 1,
    }
    checkpoint = load_checkpoint(run_folder / "best.pt")
    assert checkpoint["task"] == "toyqa" and checkpoint["head"] == "open_ended"
    config = checkpoint["model_config"]
    assert (config["motion_dim"], config["motion_objects_dim"]) == (6, 4)
    assert (config["appearance_dim"], config["appearance_objects_dim"]) == (2048, 2048)
    assert sorted(checkpoint["answers"]) == ["everywhere", "noise", "red", "square"]
