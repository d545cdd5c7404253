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


def test_every_source_subpackage_is_installed():
    # pyproject lists packages explicitly (kernels/ is mapped); a new subpackage must be added there.
    source = Path(__file__).resolve().parents[1] / "boundlab"
    if not source.is_dir():
        return
    names = {".".join(init.parent.relative_to(source.parent).parts) for init in source.rglob("*/__init__.py")}
    for name in names:
        assert importlib.import_module(name).__file__ is not None
    import tomllib

    pyproject = tomllib.loads((source.parent / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    assert names <= listed


def test_no_submodule_is_shadowed_by_a_name_of_its_package():
    # boundlab.models.paper.init once was both a module and a function: import paths broke
    import pkgutil
    import types

    import boundlab

    packages = [boundlab] + [importlib.import_module(m.name) for m in pkgutil.walk_packages(boundlab.__path__, "boundlab.")
                             if m.ispkg and m.name != "boundlab.kernels"] + [importlib.import_module("boundlab.kernels")]
    for package in packages:
        for info in pkgutil.iter_modules(package.__path__):
            if info.name == "__main__":  # importing it runs the command line
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            attribute = getattr(package, info.name, module)
            assert isinstance(attribute, types.ModuleType) and attribute is module, f"{package.__name__}.{info.name}"
