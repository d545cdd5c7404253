"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    if not README.exists():
        return []
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index):
    import jax

    # users run with JAX's standard promotion; the suite's strict one (conftest) would stop optax
    with jax.numpy_dtype_promotion("standard"):
        exec(compile(python_blocks()[index], f"README.md block {index}", "exec"), {})
