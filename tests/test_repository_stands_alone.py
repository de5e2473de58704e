"""The repository stands alone: no tracked file points a reader at notes kept outside it.

The science and the numbers live in ``docs/science.md``, the facts about OLMo 0.6.0 in ``docs/olmo_0_6_0.md``;
a clone must hold everything the code and its docs cite.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Spelt in pieces so that this file does not match itself.
OUTSIDE_REFERENCES = re.compile(
    "|".join([r"\.\./" + "shared", "/work/" + "shared", "SP" + r"EC\.md", r"\bSP" + r"EC\b",
              "OLMO" + "_NOTES", "paper" + r"\.txt"])
)


def tracked_files():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in listed.decode().split("\0") if name]


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), start=1):
            if OUTSIDE_REFERENCES.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == [], "cite docs/science.md or docs/olmo_0_6_0.md instead:\n" + "\n".join(offenders)


def heading_anchors(markdown: str) -> set:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors, in_code = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_every_cited_docs_section_exists():
    cited = re.compile(r"docs/(science|olmo_0_6_0)\.md#([A-Za-z0-9_-]+)")
    anchors = {name: heading_anchors((REPO / "docs" / f"{name}.md").read_text()) for name in ("science", "olmo_0_6_0")}
    broken = []
    for path in tracked_files():
        if path.is_file():
            for doc, anchor in cited.findall(path.read_text(errors="ignore")):
                if anchor not in anchors[doc]:
                    broken.append(f"{path.relative_to(REPO)}: docs/{doc}.md#{anchor}")
    assert broken == [], "no such section:\n" + "\n".join(broken)


def test_every_test_the_docs_name_exists():
    """docs/olmo_0_6_0.md says which test pins each OLMo fact; a renamed or deleted test must not leave it stale."""
    named = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
    missing = []
    for doc in ("science.md", "olmo_0_6_0.md"):
        for path, name in named.findall((REPO / "docs" / doc).read_text()):
            source = REPO / path
            if not source.is_file() or not re.search(rf"^def {name}\(", source.read_text(), re.MULTILINE):
                missing.append(f"docs/{doc}: {path}::{name}")
    assert missing == [], "no such test:\n" + "\n".join(missing)
