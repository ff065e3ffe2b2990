"""The import layering docs/ARCHITECTURE.md states, checked on the code as it is.

The layers are read from the document itself (its "The layers" block, one
module or package per line, in flow order), so the test and the document
cannot drift apart: every module of explorer/ and dashboard/ must be listed,
every listed one must exist, and each may import only what is listed above
it (or its own package's modules). Imports inside functions count too: a
lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
PACKAGES = ("explorer", "dashboard")
# The package's own __init__ re-exports the public API from every layer (a facade,
# imported by users, never by the layers themselves).
FACADES = {"explorer"}
# Heavy dependencies and the only entries allowed to import them (as the document says).
HEAVY = {
    "ray": {"explorer/sweep/"},
    "streamlit": {"dashboard/live.py", "dashboard/app.py", "dashboard/launch.py"},
    "torch": {"explorer/models/", "explorer/data/", "explorer/train.py", "explorer/cost.py",
              "explorer/sweep/", "explorer/console.py", "explorer/tracking.py"},
    "mlflow": {"explorer/tracking.py"},
    "tensorboard": {"explorer/tracking.py"},
}

# Package contracts, beyond the order (which alone would let the store import the sweep,
# listed above it): (the rule, the modules it binds, the modules they must not import),
# as dotted names, each covering its submodules. docs/ARCHITECTURE.md states each rule.
Contract = tuple[str, tuple[str, ...], tuple[str, ...]]
TORCH_SIDE = ("explorer.models", "explorer.data", "explorer.train", "explorer.cost",
              "explorer.sweep")
CONTRACTS: tuple[Contract, ...] = (
    ("parsing, enumerating and planning need no torch",
     ("explorer.errors", "explorer.metrics", "explorer.files", "explorer.arch", "explorer.spec",
      "explorer.complexity", "explorer.columns", "explorer.sampling", "explorer.space",
      "explorer.tables", "explorer.plan", "explorer.search"),
     TORCH_SIDE),
    ("models/ builds layers from an Arch and nothing else",
     ("explorer.models",),
     ("explorer.spec", "explorer.space", "explorer.data", "explorer.train", "explorer.sweep",
      "explorer.store")),
    ("the sweep knows nothing of the database",
     ("explorer.sweep",),
     ("explorer.store", "explorer.lease", "explorer.tracking", "explorer.experiment")),
    ("the store knows nothing of how results are made",
     ("explorer.store",),
     (*TORCH_SIDE, "explorer.search", "explorer.plan", "explorer.lease", "explorer.tracking",
      "explorer.experiment")),
    ("the analysis is pure: no store, no training",
     ("explorer.stats", "explorer.analysis", "explorer.compare", "explorer.figures"),
     (*TORCH_SIDE, "explorer.store", "explorer.lease", "explorer.experiment")),
    ("readers only read: no writer, no lease, no sweep",
     ("explorer.report", "explorer.tracking", "dashboard"),
     ("explorer.store.writer", "explorer.store.migrate", "explorer.lease", "explorer.sweep",
      "explorer.experiment")),
)


def documented_layers(text: str) -> list[str]:
    """The entries of the document's layers block, top (first in the flow) to bottom: the
    first word of each line that is not indented (indented lines continue a description)."""
    _, _, rest = text.partition("## The layers")
    if not rest:
        raise AssertionError(f"{ARCHITECTURE} has no '## The layers' section")
    block = rest.split("```")[1]
    return [line.split()[0] for line in block.splitlines() if line and not line[0].isspace()]


def module_files() -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) of every module in the packages."""
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def entry_of(module: str, entries: list[str]) -> str | None:
    """The documented entry a dotted module belongs to: its file, or its package folder."""
    path = module.replace(".", "/")
    for entry in entries:
        if entry == f"{path}.py" or (entry.endswith("/") and f"{path}/".startswith(entry)):
            return entry
    return None


def imported_modules(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """(module, line) for every import in the file, relative ones resolved; `from X import Y`
    yields X.Y where that is a module of ours, X otherwise."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                parent = parent if is_package else parent[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if is_our_module(candidate) else base), node.lineno


def is_our_module(name: str) -> bool:
    path = REPO / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def back_edges(entries: list[str]) -> list[str]:
    """Every import of a module of ours that is not listed above the importer."""
    rank = {entry: i for i, entry in enumerate(entries)}
    problems = []
    for module, path in module_files():
        here = entry_of(module, entries)
        if module in FACADES or here is None:
            continue
        for target, line in imported_modules(path, module):
            if target.split(".")[0] not in PACKAGES:
                continue
            there = entry_of(target, entries)
            where = f"{path.relative_to(REPO)}:{line}"
            if target in FACADES:
                problems.append(f"{where}: imports the package facade {target!r}")
            elif there is None:
                problems.append(f"{where}: imports {target}, which the document does not list")
            elif there != here and rank[there] > rank[here]:
                problems.append(f"{where}: {here} imports {there}, listed below it")
    return problems


def within(module: str, names: tuple[str, ...]) -> bool:
    """Whether the dotted module is one of `names` or inside one of them."""
    return any(module == name or module.startswith(f"{name}.") for name in names)


def contract_breaches(contracts: tuple[Contract, ...]) -> list[str]:
    """Every import that breaks one of the contracts."""
    problems = []
    for module, path in module_files():
        for rule, bound, forbidden in contracts:
            if not within(module, bound):
                continue
            for target, line in imported_modules(path, module):
                if within(target, forbidden):
                    problems.append(f"{path.relative_to(REPO)}:{line}: {module} imports "
                                    f"{target}, but {rule}")
    return problems


@pytest.fixture(scope="module")
def entries() -> list[str]:
    return documented_layers(ARCHITECTURE.read_text(encoding="utf-8"))


def test_every_module_is_listed_and_every_listed_one_exists(entries: list[str]) -> None:
    unlisted = [m for m, _ in module_files() if m not in FACADES and m != "dashboard"
                and entry_of(m, entries) is None]
    assert not unlisted, f"modules missing from {ARCHITECTURE.name}'s layers: {unlisted}"
    missing = [e for e in entries if not (REPO / e).exists()]
    assert not missing, f"listed in {ARCHITECTURE.name} but not in the code: {missing}"
    assert len(set(entries)) == len(entries)


def test_each_module_imports_only_what_is_listed_above_it(entries: list[str]) -> None:
    problems = back_edges(entries)
    assert not problems, "\n".join(problems)


def test_heavy_dependencies_stay_where_the_document_says(entries: list[str]) -> None:
    problems = []
    for module, path in module_files():
        here = entry_of(module, entries)
        for target, line in imported_modules(path, module):
            root = target.split(".")[0]
            if root in HEAVY and here not in HEAVY[root] and module not in FACADES:
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {root}")
    assert not problems, "\n".join(problems)


def test_the_library_never_imports_the_dashboard() -> None:
    found = [f"{path.relative_to(REPO)}:{line}" for module, path in module_files()
             if module.startswith("explorer")
             for target, line in imported_modules(path, module) if target.startswith("dashboard")]
    assert not found, found


def test_the_checker_finds_a_back_edge(entries: list[str]) -> None:
    """The same walk over a reversed list reports edges: the check is not vacuous."""
    assert back_edges(list(reversed(entries)))


def test_packages_keep_their_contracts() -> None:
    problems = contract_breaches(CONTRACTS)
    assert not problems, "\n".join(problems)


def test_every_contract_names_modules_that_exist() -> None:
    named = {name for _, bound, forbidden in CONTRACTS for name in (*bound, *forbidden)}
    assert not [name for name in named if not is_our_module(name)]


def test_the_contract_check_finds_a_breach() -> None:
    """A contract the code does break (the store imports metrics) is reported: the check is
    not vacuous."""
    found = contract_breaches((("a test rule", ("explorer.store",), ("explorer.metrics",)),))
    assert found and all("a test rule" in line for line in found)
