"""The install layout: kernels/ ships as boundlab.kernels and never as a top-level module."""

import importlib
import importlib.metadata
from pathlib import Path


def test_kernels_installed_under_boundlab_only():
    kernels = importlib.import_module("boundlab.kernels")
    assert Path(kernels.__file__).parent.name == "kernels"
    dist = importlib.metadata.distribution("boundlab")
    files = [str(f).replace("\\", "/") for f in dist.files or []]
    assert not any(f.startswith("kernels/") for f in files)
    if "boundlab/__init__.py" in files:  # a regular (not editable) install lists its modules
        assert "boundlab/kernels/__init__.py" in files


def test_public_names_are_exported():
    import boundlab

    for name in boundlab.__all__:
        assert hasattr(boundlab, name), name
