"""Fill ``{{name}}`` placeholders of the files in ``launch/templates/``.

Plain substitution, no logic: shell syntax (``${VAR}``, ``$((...))``) passes through untouched. Every
placeholder must get a value and every value must have a placeholder, so a renamed field cannot silently
leave a hole in a job script.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

TEMPLATE_DIR = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render(template_name: str, values: Mapping[str, object]) -> str:
    """The template ``launch/templates/<template_name>`` with its placeholders replaced by ``str(value)``."""
    text = (TEMPLATE_DIR / template_name).read_text()
    wanted = set(_PLACEHOLDER.findall(text))
    missing, unused = sorted(wanted - set(values)), sorted(set(values) - wanted)
    assert not missing and not unused, f"{template_name}: missing values {missing}, unused values {unused}"
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)
