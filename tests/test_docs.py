"""The documentation: the site builds with ``--strict`` (a broken link or anchor fails), and every
Python and shell block of README.md and docs/*.md either runs here or says why it cannot.

The convention, for whoever writes a page:

- Every fenced block names its language: ``python`` and ``bash`` blocks are code; ``text``,
  ``json``, ``yaml`` and ``toml`` blocks are not run (``json`` blocks must parse, and a JSON
  Lines example, one object per line, must read as questions of your own collection; ``toml``
  blocks must parse).
- A code block is run by :func:`test_block`, in a temporary folder of its own that holds a copy
  of ``demo/``, the output of one ``masn demo --quick`` shared by all blocks (the README's
  ``masn demo --quick`` block is that run itself). There are no published weights
  (``MASN_WEIGHTS_DIR`` is an empty folder), so everything runs with random networks; the
  virtual environment's ``masn`` comes first on ``PATH``. Python blocks run with this
  interpreter, shell blocks with ``bash -euo pipefail``.
- A code block that cannot run there has an HTML comment on the line just before its fence,
  which readers do not see, naming why among :data:`NEEDS`, e.g. ``<!-- needs: real data -->``
  or ``<!-- needs: checkout, minutes -->``. Such blocks still have every ``--flag`` they give
  a ``masn`` command checked against that command's ``--help``, every ``make`` target against
  the Makefile, and Python blocks compiled.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

from masn.datasets import all_tasks, dataset_names, get_dataset
from masn.datasets.folder import read_jsonl
from masn.pipeline.cli import main
from tests.builders import child_env

REPO = Path(__file__).resolve().parents[1]
REMOTE = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"')
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NEEDS = {
    "network": "installs or downloads packages or files",
    "real data": "published weights, a dataset's videos or questions, the authors' files",
    "gpu": "CUDA GPUs",
    "checkout": "a make target of the repository",
    "minutes": "the full demo, the test suite, benchmarks",
    "server": "runs until stopped",
}
CODE = ("python", "bash")
NOT_RUN = ("text", "json", "yaml", "toml")
SHARED_DEMO = "masn demo --quick"
MARKER = re.compile(r"<!--\s*needs:\s*(?P<reasons>[^>]*?)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")
BIN = Path(sys.executable).parent
README_LINES = 160  # "a path of at most about 150 lines" (issue 23)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, why it cannot run (if it says) and its code."""

    page: Path
    line: int
    language: str
    needs: tuple[str, ...] | None
    marker: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, number = [], 0
    while number < len(lines):
        opened = FENCE.match(lines[number])
        if not opened:
            number += 1
            continue
        indent = opened["indent"]
        end = next(
            (i for i in range(number + 1, len(lines)) if lines[i].strip() == "```"), len(lines)
        )
        code = "\n".join(line.removeprefix(indent) for line in lines[number + 1 : end]) + "\n"
        before = lines[number - 1].strip() if number else ""
        marked = MARKER.fullmatch(before)
        needs = tuple(r.strip() for r in marked["reasons"].split(",")) if marked else None
        language = opened["info"].strip()
        blocks.append(Block(page, number + 1, language, needs, before if marked else "", code))
        number = end + 1
    return blocks


def prose(page: Path) -> list[str]:
    """The lines of a page outside its fenced blocks."""
    inside, kept = False, []
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line) or (inside and line.strip() == "```"):
            inside = not inside
        elif not inside:
            kept.append(line)
    return kept


BLOCKS = [block for page in PAGES for block in blocks_of(page)]
RUN = [b for b in BLOCKS if b.language in CODE and b.needs is None]


def test_every_block_names_its_language_and_a_marked_block_says_why():
    assert len(BLOCKS) > 20 and len(RUN) >= 8
    for block in BLOCKS:
        assert block.language in CODE + NOT_RUN, f"{block.name}: ```{block.language}"
        if block.needs is not None:
            assert block.language in CODE, f"{block.name}: only code blocks are marked"
            unknown = set(block.needs) - set(NEEDS)
            assert not unknown, f"{block.name}: needs {unknown}; known: {sorted(NEEDS)}"
    for page in PAGES:  # a marker that does not stand just before a fence marks nothing
        markers = sum(1 for line in prose(page) if re.search(r"<!--\s*needs:", line))
        assert markers == sum(1 for b in BLOCKS if b.page == page and b.marker), page.name


def test_the_readme_is_a_short_path_with_the_cpu_note_before_the_first_install_block():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_LINES
    assert "../shared" not in text
    first_pip = next(b for b in BLOCKS if b.page.name == "README.md" and "pip install" in b.code)
    assert "--index-url https://download.pytorch.org/whl/cpu" in first_pip.code
    assert "make test" in text  # .ci/run runs what the README says
    assert [b.code.strip() for b in RUN if b.code.strip() == SHARED_DEMO]


def _logical_lines(code: str) -> list[str]:
    return [line for line in code.replace("\\\n", " ").splitlines() if line.strip()]


def _masn_calls(code: str) -> list[list[str]]:
    """The arguments of every ``masn`` command in a shell block (comments dropped)."""
    calls = []
    for line in _logical_lines(code):
        line = line.replace("$(which masn)", "masn")
        for part in re.split(r"&&|\|\||[|;]", line):
            words = shlex.split(part, comments=True)
            if words[:1] == ["masn"] or (words[:1] == ["torchrun"] and "masn" in words):
                calls.append(words[words.index("masn") + 1 :])
    return calls


@functools.cache
def _help(*command: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as ended:
        main([*command, "--help"])
        raise SystemExit(0)  # the overview returns instead of exiting
    assert ended.value.code == 0, command
    return printed.getvalue()


def _command(args: list[str]) -> tuple[str, ...]:
    """The command (and action) that ``masn ARGS`` runs."""
    words = [a for a in args if a not in ("-v", "-q", "--verbose", "--quiet")]
    name = words[0]
    if re.search(rf"^\s+{re.escape(name)}\s*$|^\s+{re.escape(name)}\s", _help(), re.M) is None:
        raise AssertionError(f"masn {name}: no such command")
    action = words[1] if len(words) > 1 and not words[1].startswith("-") else None
    if action and re.search(rf"^\s+{re.escape(action)}\s", _help(name), re.M):
        return (name, action)
    return (name,)


def test_every_masn_flag_and_make_target_of_the_shell_blocks_exists():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    checked = 0
    for block in BLOCKS:
        if block.language != "bash":
            continue
        for args in _masn_calls(block.code):
            command = _command(args)
            text = _help(*command)
            for flag in (a.split("=")[0] for a in args if a.startswith("--")):
                if flag in ("--help", "--config", "--print-config", "--version"):
                    continue
                assert re.search(rf"{re.escape(flag)}\b", text), f"{block.name}: masn {flag}"
                checked += 1
        for line in _logical_lines(block.code):
            words = shlex.split(line, comments=True)
            if words[:1] == ["make"]:
                assert words[1] in targets, f"{block.name}: make {words[1]}"
    assert checked > 30


def test_the_python_blocks_that_need_real_data_compile():
    for block in BLOCKS:
        if block.language == "python":
            compile(block.code, block.name, "exec")


def test_the_data_blocks_parse(tmp_path: Path):
    for block in BLOCKS:
        if block.language == "toml":
            tomllib.loads(block.code)
        elif block.language == "json":
            try:
                json.loads(block.code)
            except json.JSONDecodeError:  # JSON Lines: questions of your own collection
                for number, line in enumerate(block.code.splitlines()):
                    path = tmp_path / f"{block.page.stem}-{block.line}-{number}.jsonl"
                    path.write_text(line + "\n", encoding="utf-8")
                    (row,) = read_jsonl(path)
                    assert row.question and row.keys


def test_the_datasets_page_links_where_every_dataset_comes_from():
    text = (REPO / "docs" / "datasets.md").read_text(encoding="utf-8")
    for name in dataset_names():
        dataset = get_dataset(name)
        assert f"`{name}`" in text and (name == "folder" or f"## {dataset.title}" in text)
        for link in dataset.links.values():
            assert link in text, (name, link)


def test_the_configs_page_names_every_config_with_the_papers_figure():
    text = (REPO / "docs" / "configs.md").read_text(encoding="utf-8")
    tasks = all_tasks()
    for config in sorted((REPO / "configs").glob("*.yaml")):
        row = next(line for line in text.splitlines() if f"`configs/{config.name}`" in line)
        task = re.search(r"^task: (\w+)$", config.read_text(), re.M)[1]
        published = tasks[task].published
        unit = " test MSE" if published.metric == "mse" else " %"
        assert f"| {published.value}{unit} |" in row, row


def test_the_site_builds_strictly_and_fetches_nothing(tmp_path: Path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**child_env(), "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    pages = {page.stem for page in PAGES if page.parent.name == "docs"}
    assert pages <= {path.stem for path in site.glob("*.html")}
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in ("masn.load", "masn.TrainedModel.answer", "masn.extract_video", "masn.Extractor"):
        assert f'id="{name}"' in api, name  # rendered from the docstrings
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        remote = REMOTE.findall(html)
        assert not remote, (path.name, remote[:3])


# --------------------------------------------------------------------------- running the blocks


def _run(code: str, language: str, folder: Path, timeout: float = 600) -> None:
    env = {
        **child_env(),
        "PATH": f"{BIN}:{child_env().get('PATH', '')}",
        "MASN_WEIGHTS_DIR": str(folder / ".no-weights"),
        "MPLBACKEND": "Agg",
    }
    if language == "python":
        script = folder / "block.py"
        script.write_text(code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"exit {done.returncode}\n{output}"


@pytest.fixture(scope="session")
def shared_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo/`` as the README's ``masn demo --quick`` leaves it."""
    folder = tmp_path_factory.mktemp("docs-demo")
    _run(SHARED_DEMO, "bash", folder)
    demo = folder / "demo"
    for kind in ("open_ended", "count", "multiple_choice"):
        assert (demo / "runs" / kind / "best.pt").is_file()
        assert (demo / "runs" / kind / "evaluate-test" / "metrics.json").is_file()
    assert (demo / "features.h5").is_file() and (demo / "answer.png").is_file()
    return demo


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN, ids=[block.name for block in RUN])
def test_block(block: Block, shared_demo: Path, tmp_path: Path):
    if block.code.strip() == SHARED_DEMO:
        return  # the shared demo run itself (the fixture checked its outputs)
    shutil.copytree(shared_demo, tmp_path / "demo")
    _run(block.code, block.language, tmp_path)
