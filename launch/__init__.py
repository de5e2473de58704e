"""Launching training runs: SLURM job arrays for sweeps (multi-node, preemption-safe) and local torchrun.

Imports the library (``olmo_injection``); the library never imports this package. See docs/launch.md.
"""
