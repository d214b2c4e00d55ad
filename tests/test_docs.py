"""Every ``python`` block of README.md and docs/*.md runs, and the docs site builds strictly.

The convention (one block, one test, a fresh namespace):

- a ```` ```python ```` block runs on its own, under this suite's conftest;
- ``<!-- setup: name[, name] -->`` on the line before the fence runs
  ``tests/docs_setup/<name>.py`` first and copies its globals into the block's namespace
  (its ``teardown()``, if any, runs after the block);
- ``<!-- skip: reason -->`` on the line before the fence skips the block with that reason
  (only for what the suite cannot give: the internet, a cluster).

Top-level ``await`` is allowed: such a block runs in ``asyncio.run``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import linecache
import os
import re
import runpy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUPS = Path(__file__).resolve().parent / "docs_setup"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>setup|skip)\s*:\s*(?P<value>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    source: str
    setups: tuple[str, ...] = ()
    skip: str | None = None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if opening["info"].strip().split(" ")[0] == "python":
            body = "\n".join(line[indent:] for line in lines[i + 1 : end])
            setups, skip = _markers(lines, i)
            yield Block(page, i + 1, body + "\n", setups, skip)
        i = end + 1


def _markers(lines: list[str], fence: int) -> tuple[tuple[str, ...], str | None]:
    """The setup/skip comments on the lines right above the fence at ``fence``."""
    setups: list[str] = []
    skip = None
    above = fence - 1
    while above >= 0 and (marker := _MARKER.match(lines[above])):
        if marker["kind"] == "skip":
            skip = marker["value"] or "no reason given"
        else:
            setups.extend(s.strip() for s in marker["value"].split(",") if s.strip())
        above -= 1
    return tuple(setups), skip


BLOCKS = [block for page in PAGES for block in _blocks(page)]


def _compile(block: Block) -> CodeType:
    # Registered as a source file, so a failing block's traceback shows its own lines.
    linecache.cache[block.name] = (len(block.source), None, block.source.splitlines(True), "")
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return compile(block.source, block.name, "exec", flags=flags, dont_inherit=True)


def _setup(name: str) -> dict[str, Any]:
    path = SETUPS / f"{name}.py"
    assert path.is_file(), f"undeclared setup {name!r}: add tests/docs_setup/{name}.py"
    return runpy.run_path(str(path), run_name=f"docs_setup_{name}")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _compile(block)  # a skipped block must still be valid Python
    if block.skip is not None:
        pytest.skip(f"{block.name}: {block.skip}")
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    setups = [_setup(name) for name in block.setups]
    for globals_ in setups:
        namespace.update({k: v for k, v in globals_.items() if not k.startswith("__")})
    try:
        # eval, not exec: a block with top-level await compiles to a coroutine to run.
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    finally:
        for globals_ in reversed(setups):
            if callable(teardown := globals_.get("teardown")):
                teardown()


def test_docs_hold_python_blocks() -> None:
    """The collector found the pages (a moved README or a renamed fence would hide them)."""
    assert len(BLOCKS) >= 10
    assert any(block.page.name == "README.md" for block in BLOCKS)


def test_every_declared_setup_exists() -> None:
    missing = {n for b in BLOCKS for n in b.setups if not (SETUPS / f"{n}.py").is_file()}
    assert not missing, f"blocks declare setups with no tests/docs_setup/<name>.py: {missing}"


def test_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, a missing page or API reference fails."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs is not None, "mkdocs is not installed: pip install -e '.[test]'"
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_readme_links_reach_files_of_the_checkout() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [m["target"].split("#")[0] for m in _LINK.finditer(readme)]
    local = [t for t in targets if t and "://" not in t]
    assert local, "the README links no docs pages"
    broken = [t for t in local if not (ROOT / t).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_readme_is_a_newcomers_page_whose_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(first_block) == 2, "exactly two set-up commands at the top"
    assert "otel-identity demo" in first_block[0]
    assert first_block[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
