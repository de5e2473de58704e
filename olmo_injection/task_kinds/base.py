"""``TaskKind``: everything that differs between kinds of injected task, declared in one class per kind.

An instance of every kind is the four tokens ``TOK1 TOK2 LABEL EOS`` over ``num_values`` word tokens with values
``0 .. num_values-1`` (all ``num_values**2`` ordered pairs). A kind says how the label follows from the two
values, which tokens the labels are, which config fields it takes, which natural-text reference prompts measure
the same skill, and which offline analyses apply. Nothing else in the project names a kind: config validation,
task building and task files, the metrics hook, sweeps and the analyses ask ``olmo_injection.task_kinds``.

To add a kind, subclass ``TaskKind`` in one module and register it: a built-in kind in
``olmo_injection.task_kinds.BUILTIN_KINDS``; a kind in your own package through the entry point group
``olmo_injection.task_kinds`` (``my_kind = my_package.my_module:MyKind``). See ``mul.py`` for a complete one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, FrozenSet, Optional

import numpy as np

if TYPE_CHECKING:
    from ..hooks.task_eval_config import TaskEvalConfig
    from ..prompt_sets import PromptSet


class TaskKind:
    """One kind of injected task (subclass it; the class attributes and ``label_index`` are required)."""

    name: ClassVar[str]
    """The kind's name in configs (``injection.tasks.N.kind``) and task files."""

    description: ClassVar[str]
    """One line for messages and docs, e.g. ``is v(TOK1) < v(TOK2)? (two label tokens)``."""

    own_label_tokens: ClassVar[int] = 0
    """How many label tokens the kind draws besides its words (cmp: 2, true and false). 0: the labels are the
    first ``modulus`` word tokens themselves (the value tokens)."""

    takes_modulus: ClassVar[bool] = False
    """Whether ``modulus`` applies: the labels are then values mod ``modulus`` (default ``num_values``)."""

    analyses: ClassVar[FrozenSet[str]] = frozenset()
    """Offline analyses that are defined for this kind (names as in ``olmo-inject analyze``: ``das``,
    ``probe``, ``fourier``)."""

    def label_index(self, v1: np.ndarray, v2: np.ndarray, modulus: int) -> np.ndarray:
        """Per instance, the index into the task's label tokens of the right LABEL (values as int arrays)."""
        raise NotImplementedError

    def modulus(self, num_values: int, configured: Optional[int]) -> int:
        """The modulus a task of this kind uses (0 when it takes none)."""
        if not self.takes_modulus:
            return 0
        return configured or num_values

    def num_labels(self, num_values: int, modulus: int) -> int:
        """How many different LABEL tokens the task has (chance accuracy is one over this)."""
        return self.own_label_tokens or modulus

    def reference_prompts(self, tokenizer, cfg: "TaskEvalConfig") -> Optional["PromptSet"]:
        """The natural-text prompts that measure the same skill (``task/<t>/ref/...``), or ``None``."""
        return None

    def check(self, num_values: int, modulus: Optional[int], label_tokens: Optional[list], where: str) -> None:
        """``ValueError`` naming ``where``'s field when a kind-specific setting is out of range.

        ``modulus`` and ``label_tokens`` are as configured (``None`` when not set), or as a task file has them.
        """
        if modulus is not None and modulus != 0 and not self.takes_modulus:
            raise ValueError(f"{where}.modulus={modulus}: '{self.name}' tasks take no modulus")
        if self.takes_modulus and modulus is not None and not 2 <= modulus <= num_values:
            raise ValueError(f"{where}.modulus={modulus}: must be in [2, num_values={num_values}]")
        if label_tokens is not None and self.own_label_tokens == 0:
            raise ValueError(f"{where}.label_tokens={list(label_tokens)}: '{self.name}' tasks use their value "
                             "tokens as labels and take no label_tokens")
        if label_tokens is not None and (len(label_tokens) != self.own_label_tokens
                                         or len(set(label_tokens)) != len(label_tokens)):
            raise ValueError(f"{where}.label_tokens={list(label_tokens)}: '{self.name}' tasks take "
                             f"{self.own_label_tokens} distinct ids")
