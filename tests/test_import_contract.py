"""The layer contract of DESIGN.md, drawn from the code: every room of the package sits on one rung
of the ladder, imports only rooms on lower rungs, no module takes part in an import cycle, and no
module imports a private name (or a private module) of another room.

The graph is read from the source with ``ast`` (every ``import``, at the top of a module or inside
a function: a lazy import is still an arrow), with ``kernels/`` counted as the package it is
installed as, ``boundlab.kernels``."""

from __future__ import annotations

import ast
import pathlib
import re
import shutil

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent

# The ladder, lowest rung first; a room imports only rooms on lower rungs (never a sibling on its
# own rung).  A room is a subpackage or a top-level module of boundlab.  DESIGN.md states the same
# ladder (checked below).
LADDER = (
    ("runtime", "output", "errors", "linalg", "verdicts"),
    ("formats", "quantities"),
    ("rounding", "fragility"),
    ("elementary", "accumulation"),
    ("matrix_units",),
    ("kernels",),
    ("arithmetic",),
    ("emulation",),
    ("structure",),
    ("models",),
    ("condition", "sensitivity"),
    ("bounds",),
    ("analysis",),
    ("training",),
    ("experiments",),
    ("bench",),
    ("",),  # boundlab/__init__.py: the public surface (re-exports only)
    ("cli",),
    ("__main__",),
)
RUNG = {room: rung for rung, rooms in enumerate(LADDER) for room in rooms}


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for boundlab/ and kernels/ (as boundlab.kernels) under root."""
    found = {}
    for top, package in (("boundlab", ["boundlab"]), ("kernels", ["boundlab", "kernels"])):
        for path in sorted((root / top).rglob("*.py")):
            parts = package + list(path.relative_to(root / top).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _package(module: str, path: pathlib.Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(found: dict[str, pathlib.Path]) -> list[tuple[str, str, str, int]]:
    """(importer, imported module, imported name or "", line) for every import of boundlab."""
    arrows = []
    for module, path in found.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                arrows += [(module, a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "boundlab"]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = _package(module, path).split(".")
                    base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] != "boundlab":
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    arrows.append((module, submodule, "", node.lineno) if submodule in found
                                  else (module, base, alias.name, node.lineno))
    return arrows


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _cycles(found, arrows) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    graph = {m: sorted({b for a, b, _, _ in arrows if a == m and b in found and b != m}) for m in found}
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter[0]; counter[0] += 1; stack.append(start); on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop(); on_stack.discard(member); component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]; counter[0] += 1; stack.append(child); on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _private_attributes(found) -> list[str]:
    """``module._name`` where ``module`` is another room's module bound by an import."""
    problems = []
    for module, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        bound = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("boundlab"):
                bound.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                              if f"{node.module}.{a.name}" in found})
            elif isinstance(node, ast.Import):
                bound.update({a.asname: a.name for a in node.names if a.asname and a.name in found})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and _private(node.attr) and room(bound[node.value.id]) != room(module)):
                problems.append(f"{module}:{node.lineno} reads the private {bound[node.value.id]}.{node.attr} "
                                f"of another room")
    return problems


def violations(root: pathlib.Path = REPOSITORY) -> list[str]:
    """Every breach of the contract in the tree under root, one line each (empty: none)."""
    found = modules(root)
    arrows = imports(found)
    problems = [f"{m}: room {room(m)!r} is on no rung of the ladder (tests/test_import_contract.py, DESIGN.md)"
                for m in found if room(m) not in RUNG]
    for importer, target, name, line in arrows:
        source, destination = room(importer), room(target)
        if source in RUNG and destination in RUNG and source != destination and RUNG[destination] >= RUNG[source]:
            kind = "a sibling on its rung" if RUNG[destination] == RUNG[source] else "a higher rung"
            problems.append(f"{importer}:{line} imports {target} ({kind}: {destination!r} is not below {source!r})")
        if any(_private(part) for part in target.split(".") + [name]) and source != destination:
            problems.append(f"{importer}:{line} imports the private {'.'.join(filter(None, [target, name]))} "
                            f"of another room")
    problems += _private_attributes(found)
    problems += [f"import cycle: {' -> '.join(component)}" for component in _cycles(found, arrows)]
    return problems


def test_the_package_keeps_the_layer_contract():
    assert violations() == []


def test_design_md_states_the_same_ladder():
    """DESIGN.md's table of rungs names every room of LADDER on the rung LADDER gives it."""
    text = (REPOSITORY / "DESIGN.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", text, re.M))
    stated = {name.strip("` "): int(rung) for rung, names in table.items() for name in names.split(",")}
    assert stated == {room or "boundlab": rung for room, rung in RUNG.items()}


@pytest.mark.parametrize("breach", ["back-edge", "sibling", "cycle", "private", "unknown room"])
def test_the_check_fails_on_a_breach(tmp_path, breach):
    """A copy of the tree with one breach added in a temporary module is refused, with the line."""
    for top in ("boundlab", "kernels"):
        shutil.copytree(REPOSITORY / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(tmp_path) == []
    added = {"back-edge": ("boundlab/formats_extra.py", "from boundlab.analysis import analyze\n"),
             "sibling": ("boundlab/condition/extra.py", "from boundlab.sensitivity import first_order\n"),
             "cycle": ("boundlab/models/extra.py", "import boundlab.models.cycle_partner\n"),
             "private": ("boundlab/analysis/extra.py", "from boundlab.rounding import _CONTAINERS\n"),
             "unknown room": ("boundlab/newroom/__init__.py", "")}[breach]
    (tmp_path / added[0]).parent.mkdir(exist_ok=True)
    (tmp_path / added[0]).write_text(added[1])
    if breach == "cycle":
        (tmp_path / "boundlab/models/cycle_partner.py").write_text("def later():\n    import boundlab.models.extra\n")
    if breach == "back-edge":
        RUNG["formats_extra"] = RUNG["formats"]
    try:
        found = violations(tmp_path)
    finally:
        RUNG.pop("formats_extra", None)
    expected = {"back-edge": "formats_extra:1 imports boundlab.analysis (a higher rung",
                "sibling": "condition.extra:1 imports boundlab.sensitivity (a sibling on its rung",
                "cycle": "import cycle: boundlab.models.cycle_partner -> boundlab.models.extra",
                "private": "analysis.extra:1 imports the private boundlab.rounding._CONTAINERS of another room",
                "unknown room": "boundlab.newroom: room 'newroom' is on no rung"}[breach]
    assert len(found) == 1 and expected in found[0], found


def test_no_module_is_over_500_lines_without_saying_why():
    """STYLE: small modules with one job; a longer one states at its top why it is one file."""
    long = [f"{name} ({len(path.read_text().splitlines())} lines)" for name, path in modules(REPOSITORY).items()
            if len(path.read_text().splitlines()) > 500
            and "Why one file" not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert long == [], f"split these, or say at the top why each is one file: {long}"


def test_no_two_modules_share_a_name_unless_they_do_the_same_job():
    """Modules of the same name are the same job for different families (``network``, ``module``:
    a model family's pure functions and its NNX twin), a package's ``__init__``, or a Pallas kernel
    named after the function it runs (``boundlab.kernels.rounding`` beside ``boundlab.rounding``)."""
    same_job = {"network", "module", "__init__"}
    seen: dict = {}
    for name, path in modules(REPOSITORY).items():
        stem = path.stem
        if stem not in same_job and not name.startswith("boundlab.kernels."):
            seen.setdefault(stem, []).append(name)
    shared = {stem: names for stem, names in seen.items() if len(names) > 1}
    assert shared == {}, shared
