"""Run the docstring examples of the installed package."""

import doctest
import importlib
import pkgutil

import pytest

import boundlab

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

MODULES = sorted(m.name for m in pkgutil.walk_packages(boundlab.__path__, "boundlab.") if m.name != "boundlab.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
