"""The notebooks run top to bottom (each from an empty namespace, with JAX's defaults) at their
small size, their .ipynb matches its jupytext twin, and no stale outputs are stored; the docs site
builds (warnings are errors) from the notebooks just executed, with every public function and class in
its API reference."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(path.stem for path in NOTEBOOKS.glob("*.py"))


def test_every_notebook_has_both_twins():
    assert len(NAMES) >= 6
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_matches_its_py_twin_and_holds_no_outputs(name):
    stored = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    twin = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in twin.cells], \
        f"{name}.ipynb differs from {name}.py: run `jupytext --sync notebooks/{name}.py`"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{name}.ipynb stores outputs"


# Each notebook runs top to bottom as its first cell after this one, in a kernel whose user
# namespace is empty (%reset), whose JAX configuration is back at its defaults, with no figure
# open and in a directory of its own (tests/fresh_state.py): what a fresh kernel gives it, except
# that the modules are imported once and the programs the notebooks share are traced and compiled
# once (one kernel for all of them takes about 80 % of one kernel each).
_SETUP = f"""
import sys
sys.path.append({str(Path(__file__).parent)!r})  # after everything else: it shadows nothing
import fresh_state
del sys, fresh_state
"""
_RESET = """%reset -f
__import__("fresh_state").reset({path!r})
"""


@pytest.mark.long
def test_notebooks_run_and_the_docs_site_builds_from_them(tmp_path):
    # the notebooks print and plot, they assert nothing bit for bit: compiling with less XLA
    # optimisation roughly halves their (compile-dominated) run time in the test, and with the same
    # options as the in-process tests that check files and tables (tests/conftest.py), so programs
    # they share are compiled once per run
    import nbformat
    from jupyter_client import KernelManager

    env = {"MPLBACKEND": "Agg", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    kernel = KernelManager(kernel_name="python3")
    failures = []
    try:
        kernel.start_kernel(cwd=str(tmp_path))
        setup = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_SETUP)])
        nbclient.NotebookClient(setup, km=kernel, timeout=150, kernel_name="python3").execute()
        for name in NAMES:
            # a cell that times out fails the notebook at once: the notebook's cell 4 in 09 once did
            # in CI, twice in a row, and the cause was no kernel trouble but a real hang (jaxlib's
            # batched LAPACK kernels deadlocking XLA's 2-thread pool, see boundlab.linalg), which a
            # retry only delays
            (tmp_path / name).mkdir()
            notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
            notebook.cells.insert(0, nbformat.v4.new_code_cell(_RESET.format(path=str(tmp_path / name))))
            try:
                nbclient.NotebookClient(notebook, km=kernel, timeout=150, kernel_name="python3").execute()
                notebook.cells.pop(0)  # the reset cell is the test's, not the notebook's
                (tmp_path / "executed").mkdir(exist_ok=True)
                nbformat.write(notebook, tmp_path / "executed" / f"{name}.ipynb")
            except nbclient.exceptions.CellTimeoutError as error:  # the kernel is busy for good: stop
                failures.append(f"{name}: {error}")
                break
            except nbclient.exceptions.CellExecutionError as error:  # names the cell; the next notebook runs
                failures.append(f"{name}: {error}")
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert not failures, "\n\n".join(failures)
    # the site, once, from the notebooks just executed (so its notebook pages show their outputs)
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--notebooks", str(tmp_path / "executed"),
                            "--site", str(site)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"the docs build failed:\n{build.stderr[-6000:]}"
    missing = [name for name in public_names() if not _documented(site, name)]
    assert not missing, f"not in the API reference: {missing}"
    page = (site / "notebooks" / "01-quickstart" / "index.html").read_text()
    assert "jp-OutputArea" in page or "output_area" in page, "the rendered notebook shows no outputs"


def public_names() -> list[str]:
    """Every public function and class defined in a module of boundlab (not re-exports)."""
    import importlib
    import inspect
    import pkgutil

    import boundlab
    import boundlab.kernels

    found = {m.name for path, prefix in ((boundlab.__path__, "boundlab."), (boundlab.kernels.__path__, "boundlab.kernels."))
             for m in pkgutil.walk_packages(path, prefix)} - {"boundlab.__main__"}
    names = []
    for module_name in sorted(found):
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value)) \
                    and getattr(value, "__module__", None) == module_name:
                names.append(f"{module_name}.{name}")
    return names


_PAGES: dict = {}


def _documented(site, name) -> bool:
    if not _PAGES:
        _PAGES["text"] = "\n".join(path.read_text() for path in (site / "api").rglob("index.html"))
    return f'id="{name}"' in _PAGES["text"]
