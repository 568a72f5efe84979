"""The package's shape: steps are leaves, and no module imports itself round a cycle.

Read from the source with `ast`, so it costs nothing and sees lazy imports inside functions
too (those make cycles just the same). Imports under `if TYPE_CHECKING:` are annotations only
and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "worldmodel"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(name: str) -> set[str]:
    """The package's modules that module `name` imports, anywhere in its code."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skipped = type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from a import b` imports a.b when b is a module, else a name of a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def test_the_graph_sees_imports_of_every_kind():
    assert "worldmodel.steps.vae" in GRAPH["worldmodel.pipeline"]  # from ... import module
    assert "worldmodel.durable" in GRAPH["worldmodel.store"]
    assert "worldmodel.ray_backend" in GRAPH["worldmodel.pool"]  # lazy, inside a function
    assert "worldmodel.runner" not in GRAPH["worldmodel.steps.vae"]  # under TYPE_CHECKING


def test_steps_are_leaves_that_only_the_pipeline_imports():
    importers = {name: sorted(n for n, targets in GRAPH.items() if name in targets)
                 for name in MODULES if name.startswith("worldmodel.steps.")}
    assert {name: who for name, who in importers.items()
            if who not in ([], ["worldmodel.pipeline"])} == {}


def test_there_is_no_import_cycle():
    def cycle_from(start: str) -> list[str] | None:
        path, seen = [start], set()

        def walk(name: str) -> list[str] | None:
            for target in sorted(GRAPH[name]):
                if target == start:
                    return [*path, start]
                if target not in seen:
                    seen.add(target)
                    path.append(target)
                    found = walk(target)
                    if found:
                        return found
                    path.pop()
            return None

        return walk(start)

    cycles = [cycle for name in sorted(GRAPH) if (cycle := cycle_from(name))]
    assert not cycles, " -> ".join(cycles[0])
