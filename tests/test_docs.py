"""The docs cite tests and files that exist: a promise in docs/security.md names the test that
holds it, and a renamed or deleted test must take the citation with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# `tests/x.py::test_name`, `tests/x.py`, `tests/dir/`, and `::test_name` after a file.
_CITATION = re.compile(r"`(tests/[\w/.]*)?(?:::(\w+))?`")


def citations(text: str) -> list[tuple[str, str | None]]:
    found, last = [], ""
    for path, name in _CITATION.findall(text):
        if path:
            last = path
        if path or name:
            found.append((path or last, name or None))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_test_exists(doc: Path) -> None:
    missing = []
    for path, name in citations(doc.read_text()):
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif name and not re.search(rf"^(async )?def {name}\(", target.read_text(), re.M):
            missing.append(f"{path}::{name}")

    assert missing == []


def test_security_promises_each_name_a_test() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    promises = text.split("## Promises", 1)[1]

    for bullet in re.split(r"\n- ", promises)[1:]:
        if "unprivileged user" in bullet:
            continue  # the Dockerfile, which cannot be built here
        assert "Tests: " in bullet, bullet[:80]
