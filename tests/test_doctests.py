"""Run the docstring examples of the installed package."""

import doctest
import importlib
import pkgutil

import pytest

import boundlab
import boundlab.kernels

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

# boundlab.kernels is the top-level kernels/ folder mapped into the package (pyproject.toml): in an
# editable install it is not under boundlab.__path__, so it is walked on its own (an installed
# package would find it twice; the set keeps one)
_FOUND = {m.name for path, prefix in ((boundlab.__path__, "boundlab."), (boundlab.kernels.__path__, "boundlab.kernels."))
          for m in pkgutil.walk_packages(path, prefix)}
MODULES = sorted((_FOUND | {"boundlab.kernels"}) - {"boundlab.__main__"})


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
