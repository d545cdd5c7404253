"""The README's and the documentation's Python examples run as written, each once, in a fresh
namespace with JAX's defaults (as a user runs them), and print what the page says they print;
the images they show are in the repository; the documents docstrings name exist."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))


def python_blocks() -> list[tuple[str, str, str | None]]:
    """(page, code, the output the page states or None) for every ``python`` block of the README
    and the docs pages, each distinct block once.  A stated output is a plain fenced block right
    after the words "prints" following the code."""
    blocks, seen = [], set()
    for page in PAGES:
        pattern = r"```python\n(.*?)```(?:\s*\n+prints\n\n```\n(.*?)```)?"
        for code, printed in re.findall(pattern, page.read_text(), flags=re.S):
            if code not in seen:
                seen.add(code)
                blocks.append((page.name, code, printed or None))
    return blocks


# The blocks run one after another in one fresh interpreter, each in a namespace of its own, in a
# directory of its own, with JAX's configuration back at its defaults (standard dtype promotion, no
# x64 unless the block turns it on) and no figure left open (tests/fresh_state.py): what a user
# running the block alone gets, except that the modules boundlab imports are imported once, and
# the programs the blocks share (analyze's, the figure sweeps') are traced and compiled once (about
# 25 % of the blocks' time in fourteen interpreters). A failing block is reported with its
# traceback; the others still run.
_RUNNER = r"""
import json, os, sys, traceback
sys.path.append(sys.argv[1])  # after everything else: it shadows nothing
import fresh_state
import contextlib, io
blocks, root = json.loads(sys.stdin.read()), os.getcwd()
for index, (page, block) in enumerate(blocks):
    os.makedirs(os.path.join(root, str(index)))
    fresh_state.reset(os.path.join(root, str(index)))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"<{page} python block {index}>", "exec"), {"__name__": "__main__"})
        failure = None
    except BaseException:
        failure = traceback.format_exc()[-3000:]
    print("BLOCK " + json.dumps({"index": index, "failure": failure, "printed": printed.getvalue()}), flush=True)
"""


@pytest.mark.long
def test_the_examples_run_and_print_what_the_pages_say(tmp_path):
    # The blocks assert nothing that depends on XLA's optimisation (their bit-for-bit claims are
    # integer rounding), so they compile with less optimisation work: about half the
    # (compile-dominated) time, with the options of the in-process tests that share programs.
    blocks = python_blocks()
    assert len(blocks) >= 10 and sum(printed is not None for _, _, printed in blocks) >= 1
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    result = subprocess.run([sys.executable, "-c", _RUNNER, str(Path(__file__).parent)], input=json.dumps([(page, code) for page, code, _ in blocks]),
                            cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1800)
    reports = [json.loads(line[len("BLOCK "):]) for line in result.stdout.splitlines() if line.startswith("BLOCK ")]
    assert result.returncode == 0 and len(reports) == len(blocks), \
        f"the examples' runner stopped after {len(reports)} of {len(blocks)} blocks:\n{result.stderr[-3000:]}"
    failures = [f"{blocks[r['index']][0]} python block {r['index']} failed:\n{r['failure']}" for r in reports if r["failure"]]
    failures += [f"{blocks[r['index']][0]} python block {r['index']} printed\n{r['printed']}where the page says\n"
                 f"{blocks[r['index']][2]}" for r in reports
                 if not r["failure"] and blocks[r["index"]][2] is not None and r["printed"] != blocks[r["index"]][2]]
    assert not failures, "\n\n".join(failures)


def test_every_image_the_pages_show_is_in_the_repository_and_small():
    # the pages show the images under notebooks/images, which the site build copies beside them
    images = {(page.name, image) for page in PAGES for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())}
    assert len(images) >= 5  # Figures 1-4 and the training study
    for page, image in images:
        path = ROOT / image
        assert path.is_file(), f"{page} shows {image}, which is not in the repository"
        assert path.stat().st_size < 150_000, f"{image} is {path.stat().st_size} bytes; keep the pages' images small"


def test_the_readme_is_a_landing_page():
    assert len(README.read_text().splitlines()) <= 250


def test_documents_named_in_docstrings_exist():
    # a docstring that sends the reader to a file the repository does not have is a wrong docstring
    root = README.parent
    shipped = ({path.name for path in root.glob("*.md")} | {path.name for path in (root / "docs").glob("*.md")}
               | {"index.md", "bounds.md", "report.md"})  # written by reproduce, write_report
    for source in (root / "boundlab").rglob("*.py"):
        for name in re.findall(r"\b([\w-]+\.md)\b", source.read_text()):
            assert name in shipped, f"{source.relative_to(root)} points to {name}, which is not in the repository"
