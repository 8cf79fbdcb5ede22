"""docs/policy.md documents every key and every reason code the engine knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.policy import REASON_CODES, ReasonCode
from app.policy.loader import (
    BACKOFF_KEYS,
    BREAKER_KEYS,
    BUDGET_KEYS,
    LIMITS_KEYS,
    PER_HOST_KEYS,
    RULE_KEYS,
    TOP_KEYS,
    WHEN_KEYS,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
KEYS = sorted(
    {
        *TOP_KEYS,
        *RULE_KEYS,
        *WHEN_KEYS,
        *BACKOFF_KEYS,
        *LIMITS_KEYS,
        *BUDGET_KEYS,
        *PER_HOST_KEYS,
        *BREAKER_KEYS,
    }
)


@pytest.mark.parametrize("key", KEYS)
def test_every_key_is_documented(key: str) -> None:
    assert f"`{key}" in DOC or f".{key}`" in DOC


@pytest.mark.parametrize("code", [*REASON_CODES, ReasonCode.NOT_MATCHED])
def test_every_reason_code_is_documented(code: str) -> None:
    assert f"| `{code}` |" in DOC or f"`{code}`" in DOC
