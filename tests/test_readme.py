"""The README's Python examples run as written, each in a fresh interpreter (as a user runs them)."""

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


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, tmp_path):
    # A fresh interpreter with JAX's defaults (standard dtype promotion, no x64 unless the block
    # turns it on). The blocks assert nothing that depends on XLA's optimisation (their bit-for-bit
    # claims are integer rounding), so they compile with less optimisation work: about half the
    # (compile-dominated) time, with the options of the in-process tests that share programs.
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    result = subprocess.run([sys.executable, "-c", python_blocks()[index]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"README.md python block {index} failed:\n{result.stderr[-3000:]}"


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
