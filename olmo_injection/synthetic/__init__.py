"""The synthetic mixture-of-regressions module (paper Sec. 3): data, student, metrics, theory, batched training
over widths, and one command per experiment (``olmo-inject synthetic ...``; see README.md in this folder).

Stands alone: imports torch, numpy, matplotlib and tqdm only, never OLMo or the trainer.
"""
