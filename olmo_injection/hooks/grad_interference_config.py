"""Config of the gradient-interference hook (owned by that hook)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class GradInterferenceConfig:
    """The ``grad_interference:`` section: cosines of g, g_t, g_nt against the task reference direction."""

    enabled: bool = False
    """Log the decomposition g = g_t + g_nt on the task neurons."""

    task: Optional[str] = None
    """Name of the task whose neurons and reference direction are used; defaults to the first task."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for out-of-range settings."""
