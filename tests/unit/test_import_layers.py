"""The code's layout (docs/architecture.md): each folder of pipeline/ imports only from itself
and the folders under it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"

# Lowest first; folders of one floor may not import each other.
FLOORS = [
    {"pipeline"},  # the ground: errors.py, events.py, signals.py
    {"pipeline.oci"},
    {"pipeline.planning"},
    {"pipeline.bundle"},  # the deployment kit it carries is planned (planning/kit.py)
    {"pipeline.run"},
    {"pipeline.verbs"},
    {"pipeline.doors"},
    {"pipeline.__main__"},
]


def place(module: str) -> str:
    """The folder a module belongs to: a wing, or the ground (pipeline/'s own files)."""
    parts = module.split(".")
    if len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or parts[1] == "__main__"):
        return ".".join(parts[:2])
    return "pipeline"


def floor(module: str) -> int:
    return next(i for i, names in enumerate(FLOORS) if place(module) in names)


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":
                found |= {f"pipeline.{alias.name}" for alias in node.names}
            elif node.module.startswith("pipeline."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline.")}
    return found


def test_every_module_has_a_floor():
    for path in PACKAGE.rglob("*.py"):
        floor(module_name(path))


def test_no_folder_imports_one_above_it_or_beside_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target in imports(path):
            if place(target) == place(here):
                continue
            if floor(target) >= floor(here):
                wrong.append(f"{here} imports {target}")
    assert wrong == []


def module_imports(path: Path) -> set[str]:
    """The modules a file imports, `from pipeline.run import engine` read as pipeline.run.engine
    (under TYPE_CHECKING too: a circle of type names is a circle to a reader)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("pipeline"):
                continue
            folder = PACKAGE.parent.joinpath(*node.module.split("."))
            names = [a.name for a in node.names]
            subs = [f"{node.module}.{n}" for n in names if (folder / f"{n}.py").is_file()]
            found |= set(subs) or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline.")}
    return found


def test_no_circle_of_modules():
    graph = {
        module_name(path): module_imports(path) - {module_name(path)}
        for path in PACKAGE.rglob("*.py")
    }
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            circles.append(" -> ".join(trail[trail.index(module) :] + [module]))
            return
        for target in sorted(graph.get(module, ())):
            if target not in done:
                visit(target, [*trail, module])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [])
    assert circles == []
