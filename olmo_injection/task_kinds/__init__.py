"""The registry of task kinds: the library's own (``BUILTIN_KINDS``, one module each) and any a package adds
through the entry point group ``olmo_injection.task_kinds``. See ``base.TaskKind`` for what a kind declares.

    from olmo_injection.task_kinds import task_kind
    task_kind("add").label_index(v1, v2, modulus)

Entry points are read on the first lookup, not at import.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Dict, List, Optional

from .base import TaskKind

ENTRY_POINT_GROUP = "olmo_injection.task_kinds"

BUILTIN_KINDS = {
    "cmp": "olmo_injection.task_kinds.cmp:ComparisonKind",
    "add": "olmo_injection.task_kinds.add:AdditionKind",
    "mul": "olmo_injection.task_kinds.mul:MultiplicationKind",
}

_registry: Optional[Dict[str, TaskKind]] = None


def _load(target: str) -> TaskKind:
    module, _, attribute = target.partition(":")
    kind = getattr(import_module(module), attribute)
    return kind() if isinstance(kind, type) else kind


def _kinds() -> Dict[str, TaskKind]:
    global _registry
    if _registry is None:
        kinds = {name: _load(target) for name, target in BUILTIN_KINDS.items()}
        for point in entry_points(group=ENTRY_POINT_GROUP):
            if point.name in kinds:
                raise ValueError(f"task kind {point.name!r} from {point.value} is already defined")
            kind = point.load()
            kinds[point.name] = kind() if isinstance(kind, type) else kind
        for name, kind in kinds.items():
            if not isinstance(kind, TaskKind) or kind.name != name:
                raise ValueError(f"task kind {name!r}: must be a TaskKind whose name is {name!r}, got {kind!r}")
        _registry = kinds
    return _registry


def task_kind_names() -> List[str]:
    """Every registered kind, the library's first."""
    return list(_kinds())


def task_kind(name: str, where: str = "kind") -> TaskKind:
    """The kind called ``name``; ``ValueError`` naming ``where`` and the known kinds otherwise."""
    kinds = _kinds()
    if name not in kinds:
        raise ValueError(f"{where}={name!r}: unknown task kind; allowed: {', '.join(kinds)}")
    return kinds[name]


def require_analysis(task, analysis: str) -> None:
    """``ValueError`` when ``analysis`` is not defined for ``task``'s kind, naming the kinds it is defined for."""
    if analysis not in task_kind(task.kind).analyses:
        defined = [name for name, kind in _kinds().items() if analysis in kind.analyses]
        raise ValueError(f"task {task.name!r} has kind {task.kind!r}: {analysis} is defined for "
                         f"{', '.join(repr(k) for k in defined)}")
