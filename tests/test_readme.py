"""The README's Python examples run as written, each in a fresh namespace with JAX's defaults (as a user runs them)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    if not README.exists():
        return []
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


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
blocks, root = json.loads(sys.stdin.read()), os.getcwd()
for index, block in enumerate(blocks):
    os.makedirs(os.path.join(root, str(index)))
    fresh_state.reset(os.path.join(root, str(index)))
    try:
        exec(compile(block, f"<README.md python block {index}>", "exec"), {"__name__": "__main__"})
        failure = None
    except BaseException:
        failure = traceback.format_exc()[-3000:]
    print("BLOCK " + json.dumps({"index": index, "failure": failure}), flush=True)
"""


@pytest.mark.long
def test_readme_examples_run(tmp_path):
    # The blocks assert nothing that depends on XLA's optimisation (their bit-for-bit claims are
    # integer rounding), so they compile with less optimisation work: about half the
    # (compile-dominated) time, with the options of the in-process tests that share programs.
    blocks = python_blocks()
    assert len(blocks) >= 10
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    result = subprocess.run([sys.executable, "-c", _RUNNER, str(Path(__file__).parent)], input=json.dumps(blocks),
                            cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1800)
    reports = [json.loads(line[len("BLOCK "):]) for line in result.stdout.splitlines() if line.startswith("BLOCK ")]
    assert result.returncode == 0 and len(reports) == len(blocks), \
        f"the README runner stopped after {len(reports)} of {len(blocks)} blocks:\n{result.stderr[-3000:]}"
    failures = [f"README.md python block {r['index']} failed:\n{r['failure']}" for r in reports if r["failure"]]
    assert not failures, "\n\n".join(failures)


def test_every_image_the_readme_shows_is_in_the_repository_and_small():
    root = README.parent
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())
    assert len(images) >= 5  # Figures 1-4 and the training study
    for image in images:
        path = root / image
        assert path.is_file(), f"README shows {image}, which is not in the repository"
        assert path.stat().st_size < 150_000, f"{image} is {path.stat().st_size} bytes; keep README images small"


def test_documents_named_in_docstrings_exist():
    # a docstring that sends the reader to a file the repository does not have is a wrong docstring
    root = README.parent
    shipped = {path.name for path in root.glob("*.md")} | {"index.md", "bounds.md", "report.md"}  # written by reproduce, write_report
    for source in (root / "boundlab").rglob("*.py"):
        for name in re.findall(r"\b([\w-]+\.md)\b", source.read_text()):
            assert name in shipped, f"{source.relative_to(root)} points to {name}, which is not in the repository"
