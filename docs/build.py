"""Build the documentation site offline: ``python docs/build.py [--site DIR] [--notebooks DIR]``.

Stages a copy of the sources (``docs/``, ``DESIGN.md``, ``CHANGELOG.md``, the package with
``kernels/`` in place as ``boundlab/kernels``, as it is installed), puts the notebooks in it
executed (by ``nbclient``, one fresh kernel each; or, with ``--notebooks DIR``, the executed
``.ipynb`` files found there, as the test run passes them), and runs ``mkdocs build --strict``:
a warning (a broken link, an unresolved reference, a docstring mkdocstrings cannot read) fails
the build.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def stage(where: pathlib.Path, notebooks: pathlib.Path | None) -> pathlib.Path:
    """The tree mkdocs builds from, under ``where``; returns its mkdocs.yml."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "docs", where / "docs", ignore=ignore)
    for name in ("mkdocs.yml", "DESIGN.md", "CHANGELOG.md"):
        shutil.copy(ROOT / name, where / name)
    (where / "docs" / "changelog.md").write_text('--8<-- "CHANGELOG.md"\n')
    shutil.copytree(ROOT / "boundlab", where / "src" / "boundlab", ignore=ignore)
    shutil.copytree(ROOT / "kernels", where / "src" / "boundlab" / "kernels", ignore=ignore)
    target = where / "docs" / "notebooks"
    target.mkdir()
    shutil.copytree(ROOT / "notebooks" / "images", target / "images") if (ROOT / "notebooks" / "images").is_dir() else None
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if notebooks is not None:
            shutil.copy(notebooks / source.name, target / source.name)
        else:
            _execute(source, target / source.name)
    return where / "mkdocs.yml"


def _execute(source: pathlib.Path, destination: pathlib.Path) -> None:
    import nbclient
    import nbformat

    notebook = nbformat.read(source, as_version=4)
    workdir = destination.parent / f".run-{source.stem}"
    workdir.mkdir()
    print(f"executing {source.name}", file=sys.stderr, flush=True)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    nbformat.write(notebook, destination)
    shutil.rmtree(workdir)


def build(site: pathlib.Path, notebooks: pathlib.Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        config = stage(pathlib.Path(scratch), notebooks)
        env = {**os.environ, "MPLBACKEND": "Agg", "NO_MKDOCS_2_WARNING": "1"}
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                        "--site-dir", str(site.resolve())], check=True, cwd=scratch, env=env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default=str(ROOT / "site"), help="where the site goes (default: site/)")
    parser.add_argument("--notebooks", default=None, help="a folder of executed notebooks to use instead of running them")
    args = parser.parse_args(argv)
    try:
        build(pathlib.Path(args.site), pathlib.Path(args.notebooks) if args.notebooks else None)
    except subprocess.CalledProcessError as error:
        print(f"docs/build.py: mkdocs build failed (exit {error.returncode}); its warnings are above", file=sys.stderr)
        return 1
    print(f"the site is in {args.site} (open index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
