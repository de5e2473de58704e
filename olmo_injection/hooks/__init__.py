"""Training hooks: extra behaviour around OLMo's training step, one job per hook."""

from .base import TrainingHook

__all__ = ["TrainingHook"]
