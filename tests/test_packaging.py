"""The package as pip users get it: sdist -> wheel -> a fresh virtualenv, used from elsewhere.

The fresh environment sees this checkout's installed dependencies (torch alone is gigabytes)
through a folder of links that leaves out the checkout's own editable masn, so the wheel's
contents, entry points and package data are what run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import masn
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _run(command: list, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the fresh environment's bin folder, a working folder outside the checkout, env)."""
    root = tmp_path_factory.mktemp("packaging")
    env = {
        **os.environ,
        "HOME": str(root / "home"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "OMP_NUM_THREADS": "1",  # as the other child processes of the suite
        "TQDM_DISABLE": "1",
    }
    env.pop("MASN_WEIGHTS_DIR", None)
    dist = root / "dist"
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, REPO], REPO, env)
    # build makes the wheel from the sdist, so the sdist is complete if the wheel works.
    (wheel,) = dist.glob("masn-*.whl")
    (sdist,) = dist.glob("masn-*.tar.gz")
    assert wheel.name.startswith(f"masn-{masn.__version__}-py3-none-any")
    assert sdist.stat().st_size > 1_000_000  # carries the sample videos

    dependencies = root / "dependencies"
    dependencies.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("masn", "__editable__", "_masn")):
            (dependencies / entry.name).symlink_to(entry)
    environment = root / "venv"
    venv.create(environment)  # without pip and setuptools: this pip installs into it
    bin_dir = environment / "bin"
    python = bin_dir / "python"
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env
    )
    (Path(site.stdout.strip()) / "dependencies.pth").write_text(f"{dependencies}\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-index"]
    _run([*pip, "--find-links", dist, "masn"], root, env)
    work = root / "elsewhere"
    work.mkdir()
    return bin_dir, work, env


def _site_packages_files(bin_dir: Path) -> set[Path]:
    site = next((bin_dir.parent / "lib").glob("python3*/site-packages"))
    return {path for path in site.rglob("*") if "__pycache__" not in path.parts}


def test_the_wheel_runs_from_any_folder_and_writes_nothing_into_site_packages(installed):
    bin_dir, work, env = installed
    version = _run([bin_dir / "python", "-m", "masn", "--version"], work, env)
    assert version.stdout.strip() == f"masn {masn.__version__}"
    location = _run([bin_dir / "python", "-c", "import masn; print(masn.__file__)"], work, env)
    assert str(bin_dir.parent) in location.stdout  # the wheel's copy, not the checkout's
    before = _site_packages_files(bin_dir)
    listing = _run([bin_dir / "masn", "weights", "list"], work, env)
    assert "glove-42b-300d" in listing.stdout and "missing" in listing.stdout
    assert f"cache: {work.parent / 'cache' / 'masn'}" in listing.stdout
    assert _site_packages_files(bin_dir) == before


def test_the_quick_demo_runs_from_the_installed_package(installed):
    bin_dir, work, env = installed
    demo = [bin_dir / "masn", "demo", "--quick", "--epochs", "1", "--out", work / "demo"]
    result = _run(demo, work, env)  # one epoch: the wheel's code and data, not learning, on trial
    assert "MASN demo finished (RANDOM WEIGHTS)" in result.stdout
    assert (work / "demo" / "features.h5").is_file() and (work / "demo" / "answer.png").is_file()


def test_the_wheel_carries_the_web_apps_pages(installed):
    bin_dir, work, env = installed
    check = (
        "from masn.pipeline.serve.app import STATIC, TEMPLATES, templates\n"
        "pages = templates()\n"
        "for name in ('store.html', 'video.html', 'ask.html', 'results.html', 'compare.html'):\n"
        "    pages.get_template(name)\n"
        "assert (STATIC / 'serve.css').is_file() and (STATIC / 'serve.js').is_file()\n"
        "print(TEMPLATES)\n"
    )
    result = _run([bin_dir / "python", "-c", check], work, env)
    assert "site-packages" in result.stdout
