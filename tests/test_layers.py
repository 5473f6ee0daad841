"""The package's modules form layers, and imports only go down.

Every import in ``unetbench/`` counts, at any depth: at module level, inside functions (a lazy
import is still a dependency) and under ``if TYPE_CHECKING:``. Type-only imports must go down
like the others, since an annotation that names a higher layer couples the two just the same;
they are left out of the cycle check only, because they never run and so cannot make a
module import half-initialized.

``unetbench/__init__.py`` is the façade: its own imports (type-only and lazy) reach every
layer by design and are not checked. ``from unetbench import X`` counts as an import of the
module the façade takes ``X`` from; ``import unetbench`` and names the façade defines itself
(``__version__``) are base, since the façade imports only ``unetbench._errors`` when loaded.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

PACKAGE = "unetbench"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Bottom to top; a module may import from its own layer and the layers below it. A layer is
# named by module prefixes (a package's prefix covers its submodules).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "unetbench._errors",
            "unetbench.oom",
            "unetbench.shapes",
            "unetbench.devices",
            "unetbench.budget",
            "unetbench.config",
            "unetbench.device_names",
            "unetbench.units",
            "unetbench._lazy",
            "unetbench._versions",
            "unetbench.cpus",
            "unetbench.values",
            "unetbench.seeds",
            "unetbench.ranking",
        ),
    ),
    ("model", ("unetbench.model",)),  # the U-Net, its blocks and checkpointing policies
    ("precision", ("unetbench.precision",)),  # registers autocast with model.checkpoint
    ("data", ("unetbench.data",)),
    ("train", ("unetbench.train",)),
    ("profiler", ("unetbench.profiler",)),
    ("sweep", ("unetbench.sweep", "unetbench.studyinfo")),  # the sweep writes the study info
    ("report", ("unetbench.report",)),
    ("gate", ("unetbench.gate",)),
    ("cli", ("unetbench.cli",)),
)


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of this package
    where: str  # path:line
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        kind = " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.where}: {self.source} -> {self.target}{kind}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _existing(name: str) -> str:
    """``name``, or the nearest enclosing package of it that is a module of the package."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _facade_names() -> dict[str, str]:
    """Name -> module the façade takes it from (its imports and its table of lazy names)."""
    tree = ast.parse(MODULES[PACKAGE].read_text())
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update((alias.asname or alias.name, node.module) for alias in node.names)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            value = ast.literal_eval(node.value)
            if all(isinstance(v, str) and v.startswith(PACKAGE) for v in value.values()):
                names.update(value)
    return names


FACADE = _facade_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, source: str) -> list[str]:
    """The modules of this package that ``node`` (in module ``source``) imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [_existing(n) for n in names if n.split(".")[0] == PACKAGE]
    base = node.module or ""
    if node.level:  # relative: from the package that holds `source`
        is_package = MODULES[source].name == "__init__.py"
        anchor = source.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    if base.split(".")[0] != PACKAGE:
        return []
    targets = []
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            targets.append(f"{base}.{alias.name}")
        elif base == PACKAGE and alias.name in FACADE:
            targets.append(_existing(FACADE[alias.name]))
        else:
            targets.append(_existing(base))
    return targets


def _imports(source: str) -> list[Import]:
    path = MODULES[source]
    where = path.relative_to(ROOT.parent).as_posix()
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(node, source):
                if target != source:
                    found.append(Import(source, target, f"{where}:{node.lineno}", type_only))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, True)
            for stmt in node.orelse:
                visit(stmt, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


ALL_IMPORTS = [imp for name in MODULES for imp in _imports(name)]


def _layer(module: str) -> int:
    if module == PACKAGE:
        return 0  # the façade as loaded: see the module docstring
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} ({MODULES[module]}) has no layer: add it to LAYERS")


def _upward() -> list[Import]:
    return [
        imp
        for imp in ALL_IMPORTS
        if imp.source != PACKAGE and _layer(imp.target) > _layer(imp.source)
    ]


def _describe(imp: Import) -> str:
    names = [name for name, _ in LAYERS]
    up, down = names[_layer(imp.target)], names[_layer(imp.source)]
    return f"{imp}  [{down} -> {up}]"


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_imports_only_go_down() -> None:
    bad = list(_upward())
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(
        _describe(imp) for imp in bad
    )


def _runtime_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in ALL_IMPORTS:
        if not imp.type_only:
            graph[imp.source].add(imp.target)
    return graph


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A chain of imports from ``start`` to ``goal`` (breadth first), or None."""
    came_from: dict[str, str | None] = {start: None}
    queue = [start]
    for node in queue:
        if node == goal:
            chain = [node]
            while (prev := came_from[chain[-1]]) is not None:
                chain.append(prev)
            return chain[::-1]
        for nxt in sorted(graph[node] - came_from.keys()):
            came_from[nxt] = node
            queue.append(nxt)
    return None


def _cycle_imports() -> dict[Import, list[str]]:
    """Each runtime import that closes a cycle, with the chain that leads back from its
    target to its source."""
    graph = _runtime_graph()
    found = {}
    for imp in ALL_IMPORTS:
        if not imp.type_only and (back := _path(graph, imp.target, imp.source)) is not None:
            found[imp] = back
    return found


def test_no_import_cycles() -> None:
    bad = _cycle_imports()
    assert not bad, "imports in a cycle:\n" + "\n".join(
        f"{imp}  [back: {' -> '.join(back)}]" for imp, back in bad.items()
    )


@pytest.mark.parametrize(
    ("code", "source", "expected"),
    [
        ("from unetbench.model import checkpoint", "unetbench.precision",
         "unetbench.model.checkpoint"),
        ("from unetbench.model import UNet", "unetbench.train", "unetbench.model"),
        ("from unetbench import UNetConfig", "unetbench.gate.pytest_plugin", "unetbench.config"),
        ("from unetbench import __version__", "unetbench.profiler.env", "unetbench"),
        ("import unetbench.profiler.memory", "unetbench.sweep", "unetbench.profiler.memory"),
        ("from . import _step", "unetbench.profiler.api", "unetbench.profiler._step"),
        ("from .. import config", "unetbench.profiler.api", "unetbench.config"),
        ("from . import blocks", "unetbench.model", "unetbench.model.blocks"),
        ("import torch.nn", "unetbench.model.blocks", None),
    ],
)  # fmt: skip
def test_imports_resolve_to_modules(code: str, source: str, expected: str | None) -> None:
    (node,) = ast.parse(code).body
    assert isinstance(node, (ast.Import, ast.ImportFrom))
    assert _targets(node, source) == ([] if expected is None else [expected])


def test_type_checking_imports_are_found() -> None:
    imports = _imports("unetbench.profiler._step")
    assert any(imp.type_only and imp.target == "unetbench.config" for imp in imports)
