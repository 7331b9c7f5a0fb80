"""The floors of the package and the direction of its imports (docs/architecture.md, "Subpackages and the direction
of imports"), checked on every import statement of the source, including those inside functions and under
TYPE_CHECKING: a module imports only from its own floor or the floors below, peers on one floor do not import each
other, and no chain of imports comes back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparsesnn"

#: the floors, lowest first: each entry is a floor of peer units (a subpackage, or one top-level module). A unit may
#: import its own modules and anything on a lower floor, nothing on its floor's other units or above.
FLOORS: list[tuple[str, ...]] = [
    ("core",),  # errors, registries, the settings contract, atomic files, state restoration, collectives
    ("neuron",),  # neurons, their kernels, surrogates, spiking declarations, neuron kinds, time-folding layers
    ("models", "data", "sparse", "metrics"),  # the papers' models, datasets, structure learners, measurements
    ("train",),  # config, factory, batches, the step, the trainer, run directories, checkpoints, losses
    ("interop",),  # export formats, NIR written and read, the BatchNorm fold, peer round trips
    ("deploy", "experiments"),  # event-driven inference; sweeps and reports
    ("cli",),  # the command line
    ("__main__", "__init__"),  # ``python -m sparsesnn``; the package's public names
]


def unit_of(module: str) -> str:
    """``sparsesnn.train.config`` -> ``train``; ``sparsesnn.cli`` -> ``cli``; ``sparsesnn`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(unit: str) -> int:
    for i, floor in enumerate(FLOORS):
        if unit in floor:
            return i
    raise KeyError(unit)


def package_modules(package_dir: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_init = path.name == "__init__.py"
    package = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts[: None if is_init else -1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from sparsesnn import engine`
    return found


def import_graph(package_dir: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports. ``from a.b import c`` counts as ``a.b.c`` where that is a module,
    else as ``a.b``; the package root counts only when a name is taken from it directly."""
    modules = package_modules(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imports = imported_modules(path, package_dir)
        targets = {imported for imported in imports if imported in modules}
        # `from sparsesnn.x import y` adds both sparsesnn.x and sparsesnn.x.y: keep the deepest module only, so a
        # package's __init__ is an arrow only when a name is taken from it
        deepest = {t for t in targets if not any(o != t and o.startswith(t + ".") for o in targets)}
        for imported in imports:
            stem = imported.rsplit(".", 1)[0]
            if imported not in modules and stem in modules:
                deepest.add(stem)  # a name (function, class) taken from a module
        graph[name] = deepest - {name}
    return graph


def floor_violations(package_dir: Path = PACKAGE) -> list[str]:
    bad = []
    for module, targets in sorted(import_graph(package_dir).items()):
        unit = unit_of(module)
        for target in sorted(targets):
            other = unit_of(target)
            if other == unit:
                continue
            if floor_of(other) > floor_of(unit):
                bad.append(f"{module} imports {target}: {other} is above {unit}")
            elif floor_of(other) == floor_of(unit):
                bad.append(f"{module} imports {target}: {other} and {unit} are peers on one floor")
    return bad


def circles(package_dir: Path = PACKAGE) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every import circle."""
    graph = import_graph(package_dir)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_stands_on_a_floor() -> None:
    units = {unit_of(m) for m in package_modules()}
    assert "train" in units and "neuron" in units
    assert sorted(u for u in units if not any(u in floor for floor in FLOORS)) == []


def test_imports_flow_down_the_floors() -> None:
    assert floor_violations() == []


def test_no_import_circles() -> None:
    assert circles() == []


def test_the_structure_learners_import_only_the_core() -> None:
    """Learners work in any training loop: nothing of the trainer, the config, the data or the models."""
    graph = import_graph()
    reached = {unit_of(t) for m, targets in graph.items() if unit_of(m) == "sparse" for t in targets}
    assert reached <= {"sparse", "core"}


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "sparsesnn"
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checker_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "sparse/__init__.py": "",
            "sparse/probe.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from sparsesnn.train.config import Config\ndef f():\n    from ..train.trainer import Trainer\n",
            "train/__init__.py": "",
            "train/config.py": "Config = 1\n",
            "train/trainer.py": "Trainer = 1\n",
        },
    )
    assert floor_violations(package) == [
        "sparsesnn.sparse.probe imports sparsesnn.train.config: train is above sparse",
        "sparsesnn.sparse.probe imports sparsesnn.train.trainer: train is above sparse",
    ]


def test_the_checker_fails_on_a_circle_and_on_peers(tmp_path: Path) -> None:
    """A circle inside one floor (two train modules importing each other, one of them lazily) and an import between
    peers (models <-> data) are both reported."""
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "train/__init__.py": "",
            "train/a.py": "from sparsesnn.train.b import B\nA = 1\n",
            "train/b.py": "def make():\n    from sparsesnn.train import a\n    return a.A\nB = 1\n",
            "models/__init__.py": "",
            "models/net.py": "from sparsesnn.data.images import load\n",
            "data/__init__.py": "",
            "data/images.py": "def load(): ...\n",
        },
    )
    assert circles(package) == [["sparsesnn.train.a", "sparsesnn.train.b"]]
    assert floor_violations(package) == [
        "sparsesnn.models.net imports sparsesnn.data.images: data and models are peers on one floor"
    ]


@pytest.mark.parametrize(
    ("importer", "target"),
    [("neuron/lif.py", "sparsesnn.train.config"), ("core/errors.py", "sparsesnn.neuron.lif")],
)
def test_an_upward_import_added_to_the_real_tree_is_caught(tmp_path: Path, importer: str, target: str) -> None:
    """The real package, copied, with one upward import added to one file: the check fails."""
    import shutil

    copy = tmp_path / "sparsesnn"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "embedded"))
    path = copy / importer
    path.write_text(path.read_text() + f"\n\ndef _probe():\n    import {target}\n")
    assert floor_violations(copy) != []
