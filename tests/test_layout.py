"""The package's layout rules, read from the source with `ast` (nothing is imported or run):

(a) nothing in the library imports `gptviz.commands` (only the entry points `gptviz.__main__` and the
    `gptviz.cli` shim do);
(b) no import cycle among gptviz modules, counting every import: module level, inside functions (lazy),
    relative, and `from package import submodule`;
(c) views never run the model: nothing under `gptviz.plots` imports `gptviz.model`'s GPT or `gptviz.hooks`;
(d) domain code never draws: only `gptviz.plots`, `gptviz.widgets` and `gptviz.commands` import plots or widgets.

An import of `gptviz.x.y` is an edge to `gptviz.x.y` only: that Python runs the package `__init__`s first is
not counted, or every module would sit in a cycle with `gptviz/__init__.py`. Imports spelled as strings
(`importlib.import_module(...)`, as gptviz's lazy `__getattr__` does) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "gptviz"
ENTRY_POINTS = {"gptviz.__main__", "gptviz.cli"}  # what the `gptviz` script and `python -m gptviz` run


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` names (relative levels resolved from `importer`)."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> list[tuple[str, int, str]]:
    """(imported gptviz module, line, source text) for every gptviz import in module `name`, lazy ones included."""
    source = MODULES[name].read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(source, filename=str(MODULES[name]))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = resolve(name, node)
            # `from gptviz import plots` imports the submodule gptviz.plots; `from .model import GPT` imports model
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        text = ast.get_source_segment(source, node) or ""
        found += [(t, node.lineno, text) for t in dict.fromkeys(targets) if t == "gptviz" or t.startswith("gptviz.")]
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def where(importer: str, line: int, text: str) -> str:
    return f"{MODULES[importer].relative_to(PACKAGE_DIR.parent)}:{line}: {' '.join(text.split())}"


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_sees_lazy_and_relative_imports():
    # guards the parser itself: if these were missed, the rules below would pass vacuously
    assert "gptviz.commands.train" in MODULES and "gptviz.model" in MODULES
    assert any(t == "gptviz.model" for t, _, _ in GRAPH["gptviz.train"])  # `from .model import ...`
    assert any(t == "gptviz.commands" for t, _, _ in GRAPH["gptviz.__main__"])


def test_the_library_never_imports_commands():
    offending = [
        where(importer, line, text)
        for importer, edges in GRAPH.items()
        for target, line, text in edges
        if in_package(target, "gptviz.commands")
        and not in_package(importer, "gptviz.commands")
        and importer not in ENTRY_POINTS
    ]
    assert not offending, (
        "library modules import gptviz.commands (command-line code belongs there, and the "
        "library must work without it; move the shared code into the library instead):\n  " + "\n  ".join(offending)
    )


def find_cycles() -> list[list[str]]:
    """Every strongly connected component with more than one module (or a module importing itself): Tarjan."""
    edges = {name: sorted({t for t, _, _ in GRAPH[name] if t in MODULES}) for name in MODULES}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
            if len(component) > 1 or v in edges[v]:
                cycles.append(sorted(component))

    for name in MODULES:
        if name not in index:
            visit(name)
    return cycles


def describe(component: list[str]) -> str:
    """The imports that tie a cycle together, one per line with file and line number."""
    members = set(component)
    lines = [
        where(importer, line, text) + f"  -> {target}"
        for importer in component
        for target, line, text in GRAPH[importer]
        if target in members
    ]
    return "cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(lines)


def test_no_import_cycle_even_through_lazy_imports():
    cycles = find_cycles()
    assert not cycles, (
        "gptviz modules import each other in a circle (a function-level import still counts: it "
        "only hides the circle until that function runs). Break it by moving the shared code down "
        "to a module both can import, or by passing the value in:\n  " + "\n  ".join(describe(c) for c in cycles)
    )


def test_plots_never_run_the_model():
    offending = []
    for importer, edges in GRAPH.items():
        if not in_package(importer, "gptviz.plots"):
            continue
        source = MODULES[importer].read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.ImportFrom)
                and resolve(importer, node) == "gptviz.model"
                and any(a.name == "GPT" for a in node.names)
            ):
                offending.append(where(importer, node.lineno, ast.get_source_segment(source, node) or ""))
        offending += [where(importer, line, text) for target, line, text in edges if in_package(target, "gptviz.hooks")]
    assert not offending, (
        "plots draw records; they never run the model (no gptviz.model.GPT, no gptviz.hooks). "
        "Record in gptviz.records (or the module that owns the computation) and pass the record "
        "in:\n  " + "\n  ".join(offending)
    )


@pytest.mark.parametrize("view", ["gptviz.plots", "gptviz.widgets"])
def test_domain_code_never_imports_views(view):
    allowed = ("gptviz.plots", "gptviz.widgets", "gptviz.commands")
    offending = [
        where(importer, line, text)
        for importer, edges in GRAPH.items()
        for target, line, text in edges
        if in_package(target, view) and not any(in_package(importer, a) for a in allowed)
    ]
    assert not offending, (
        f"library modules import {view}; data flows text -> ids -> model -> record -> plot -> "
        "widget, so return a record and let the caller draw it:\n  " + "\n  ".join(offending)
    )
