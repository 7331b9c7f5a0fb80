"""The layers of the package and what each may import (docs/architecture.md, "Modules and the direction of imports"),
checked on every import statement of the source, including those inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparsesnn"

#: (files, modules they must not import): the structure-learning core knows nothing of the run (engine, config,
#: data, the factory, the command line); models know nothing of sparsity; metrics nothing of the engine
RULES = [
    (
        "sparse/**/*.py",
        ("sparsesnn.engine", "sparsesnn.config", "sparsesnn.data", "sparsesnn.factory", "sparsesnn.cli"),
    ),
    ("models/**/*.py", ("sparsesnn.sparse", "sparsesnn.engine", "sparsesnn.config", "sparsesnn.factory")),
    ("metrics.py", ("sparsesnn.engine", "sparsesnn.factory", "sparsesnn.cli")),
    ("neurons.py", ("sparsesnn.sparse", "sparsesnn.engine", "sparsesnn.config", "sparsesnn.models")),
    ("factory.py", ("sparsesnn.engine", "sparsesnn.cli")),  # config -> objects; the engine uses it, not back
    ("batching.py", ("sparsesnn.engine", "sparsesnn.factory", "sparsesnn.sparse")),
    ("rundir.py", ("sparsesnn.engine", "sparsesnn.factory", "sparsesnn.config")),
    ("neuron_kinds.py", ("sparsesnn.sparse", "sparsesnn.engine", "sparsesnn.config", "sparsesnn.models")),
]


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts[:-1])
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


def violations(pattern: str, forbidden: tuple[str, ...], package_dir: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(package_dir.glob(pattern)):
        for module in sorted(imported_modules(path, package_dir)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(package_dir)} imports {module}")
    return bad


@pytest.mark.parametrize(("pattern", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_import_rules_hold(pattern: str, forbidden: tuple[str, ...]) -> None:
    assert list(PACKAGE.glob(pattern)), f"no file matches {pattern}"
    assert violations(pattern, forbidden) == []


def test_the_checker_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "sparsesnn"
    (package / "sparse").mkdir(parents=True)
    (package / "sparse" / "probe.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sparsesnn.config import Config\n"
        "def f():\n    from ..engine import Trainer\n"
    )
    assert violations("sparse/**/*.py", RULES[0][1], package) == [
        "sparse/probe.py imports sparsesnn.config",
        "sparse/probe.py imports sparsesnn.config.Config",
        "sparse/probe.py imports sparsesnn.engine",
        "sparse/probe.py imports sparsesnn.engine.Trainer",
    ]
