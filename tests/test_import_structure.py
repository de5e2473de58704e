"""The library's shape: no import cycles (top-level or inside functions), and importing builds nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).parents[1] / "olmo_injection"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _in_type_checking(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: Set[str]) -> Set[str]:
    """Project modules ``path`` imports anywhere (module level or in a function), type-checking imports aside."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != here}
    return found


def test_the_library_has_no_import_cycles():
    paths = [p for p in PACKAGE.rglob("*.py")]
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    # A package's __init__ importing its own submodules is not a cycle through them.
    cycles: List[List[str]] = []

    def visit(node: str, stack: List[str], done: Set[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        for child in sorted(graph.get(node, ())):
            if not (child.startswith(node + ".") or node.startswith(child + ".")):
                visit(child, stack + [node], done)
        done.add(node)

    done: Set[str] = set()
    for module in sorted(graph):
        visit(module, [], done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_importing_the_config_builds_and_registers_nothing(tmp_path):
    script = (
        "from omegaconf import OmegaConf\n"
        "import olmo_injection.config, olmo_injection.train, olmo_injection.tasks, olmo_injection.sweep\n"
        "assert not OmegaConf.has_resolver('embedded_corpus'), 'resolver registered at import'\n"
    )
    env = {"OLMO_INJECTION_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "cache").exists()  # the embedded corpus was not built
