"""The documentation runs: every Python and shell code block in README.md and docs/.

Each page is read with Sybil. Its Python blocks run in order in one namespace per page,
its ``bash`` blocks through ``bash -euo pipefail`` with this interpreter's ``bin/`` first
on PATH (so ``sfvq`` and ``python`` are the ones under test), both in a fresh temporary
directory of the page's own (files one block writes, the next may read). One test per
block, named ``PAGE:LINE``. A block that cannot run here (a GPU, your own checkpoint, a
download, minutes of work) is preceded by an HTML comment, invisible on GitHub and on the
site, saying why; the test is reported as skipped with that reason::

    <!-- skip: next "needs your own StyleGAN2 checkpoint" -->

(``skip: next if(CONDITION, reason="...")`` skips only when CONDITION holds.) The blocks
run on one thread: they are small, and the machine may be running other work.

Also checked: every fenced block is ``python``, ``bash`` or ``text`` (so none escapes
these tests by an unknown language), every relative link and ``#anchor`` in the pages
resolves, README keeps the two commands a new user runs, and ``.ci/run`` runs the
README's test command and builds the site strictly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from sybil import Sybil
from sybil.parsers.markdown import ClearNamespaceParser, CodeBlockParser, PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BIN = Path(sys.executable).parent
LANGUAGES = {"python", "bash", "text"}
SHELL_TIMEOUT_S = 300


def run_bash(example) -> str | None:
    """Runs a bash block in the current directory; returns why it failed, or None."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", str(example.parsed)], cwd=os.getcwd(), env=env,
                          capture_output=True, text=True, timeout=SHELL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return (f"the bash block exited with {proc.returncode}\n--- stdout (end) ---\n{proc.stdout[-4000:]}"
                f"\n--- stderr (end) ---\n{proc.stderr[-4000:]}")
    return None


SKIP, CLEAR = SkipParser(), ClearNamespaceParser()
DOCS = Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser("bash", run_bash), SKIP, CLEAR])


def is_block(example) -> bool:
    """A code block (not a skip or clear-namespace directive)."""
    return example.region.evaluator not in (SKIP.skipper, CLEAR.evaluate)


@dataclass
class Page:
    """One page's parsed examples and how far its evaluation got."""

    path: Path
    examples: list = field(default_factory=list)
    workdir: Path | None = None
    done: int = 0  # examples[:done] have been evaluated
    failed_line: int | None = None


_PAGES: dict[Path, Page] = {}


def page(path: Path) -> Page:
    if path not in _PAGES:
        _PAGES[path] = Page(path, list(DOCS.parse(path)))
    return _PAGES[path]


def block_cases() -> list:
    cases = []
    for path in PAGES:
        for index, example in enumerate(page(path).examples):
            if is_block(example):
                cases.append(pytest.param(path, index, id=f"{path.relative_to(ROOT)}:{example.line}"))
    return cases


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("path", "index"), block_cases())
def test_block(path, index, tmp_path_factory, monkeypatch, one_thread):
    """The block at this line runs (after the page's blocks before it)."""
    state = page(path)
    if state.workdir is None:
        state.workdir = tmp_path_factory.mktemp(path.stem.lower())
    monkeypatch.chdir(state.workdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if state.failed_line is not None:
        pytest.skip(f"the block at line {state.failed_line} of {path.name} failed; later blocks need it")
    while state.done <= index:
        example = state.examples[state.done]
        state.done += 1
        try:
            example.evaluate()
        except unittest.SkipTest as skip:
            if state.done - 1 == index:
                pytest.skip(f"{path.relative_to(ROOT)}:{example.line}: {skip}")
        except BaseException:
            state.failed_line = example.line
            raise


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$", re.MULTILINE)


def fences(text: str):
    """(line, language) of every fenced block's opening line."""
    opened = None
    for match in FENCE.finditer(text):
        if opened is None:
            opened = match
            yield text.count("\n", 0, match.start()) + 1, match.group("info").strip().split(" ")[0]
        elif match.group("fence")[0] == opened.group("fence")[0] and len(match.group("fence")) >= len(
                opened.group("fence")) and not match.group("info").strip():
            opened = None


def test_every_fenced_block_has_a_checked_language():
    unknown = [f"{p.relative_to(ROOT)}:{line}: {lang or '(none)'}"
               for p in PAGES for line, lang in fences(p.read_text()) if lang not in LANGUAGES]
    assert not unknown, f"fenced blocks must be one of {sorted(LANGUAGES)} (text: not run): {unknown}"


def test_every_python_and_bash_block_is_collected():
    for path in PAGES:
        wanted = sum(lang in ("python", "bash") for _, lang in fences(path.read_text()))
        assert sum(map(is_block, page(path).examples)) == wanted, path


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (and, for the headings used here, MkDocs too)."""
    text = re.sub(r"`|\*\*|\*|\[|\]\([^)]*\)", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {github_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *$", text, re.MULTILINE)}


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_links_and_anchors_resolve():
    broken = []
    for path in PAGES:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
        for match in LINK.finditer(text):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_readme_keeps_the_two_commands_and_ci_runs_them():
    readme = (ROOT / "README.md").read_text()
    assert "bash setup.sh" in readme
    assert ".venv/bin/python -m pytest tests -q" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\n.venv/bin/python -m pytest tests -q\n" in ci
    assert re.search(r"^\.venv/bin/mkdocs build --strict --site-dir ", ci, re.MULTILINE), "CI builds the site strictly"
