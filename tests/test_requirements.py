"""Every dependency is pinned to one version with its hashes, and every install path refuses
a file that differs from the one locked (docs/security.md: supply chain)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+) \\$")


def locked(name: str) -> dict[str, list[str]]:
    """Package -> its hashes, from a pip-compile output."""
    pins: dict[str, list[str]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith((" ", "\t")):
            hashed = re.fullmatch(r"\s+--hash=sha256:([0-9a-f]{64})( \\)?", line)
            assert hashed, f"{name}: unexpected line {line!r}"
            pins[current].append(hashed.group(1))
            continue
        pinned = _PIN.match(line)
        assert pinned, f"{name}: {line!r} is not an exact pin followed by hashes"
        current = pinned.group(1).lower().replace("_", "-")
        pins[current] = []
    return pins


def direct(name: str) -> set[str]:
    names = set()
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[<>=~! ]", line)[0].lower().replace("_", "-"))
    return names


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_every_package_is_pinned_with_its_hashes(name: str) -> None:
    pins = locked(name)

    assert pins
    assert all(pins.values()), [package for package, hashes in pins.items() if not hashes]


def test_the_locks_hold_every_direct_dependency_and_agree() -> None:
    runtime, dev = locked("requirements.txt"), locked("requirements-dev.txt")

    assert direct("requirements.in") <= set(runtime)
    assert direct("requirements-dev.in") <= set(dev)
    assert set(runtime) <= set(dev)
    # the same files, so the same versions: tests run what the image ships
    assert [p for p in runtime if set(runtime[p]) != set(dev[p])] == []


def test_every_install_requires_the_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "pip install --quiet --require-hashes -r requirements-dev.txt" in makefile
    assert "pip install --require-hashes -r requirements.txt" in dockerfile
