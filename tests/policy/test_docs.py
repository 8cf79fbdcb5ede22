"""docs/policy.md documents every key and every reason code the engine knows, and every policy
example in it passes `respawn policy check`."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from app.cli.policy import check_command
from app.policy import REASON_CODES, ReasonCode, blackout_at, parse_policy
from app.policy.loader import (
    BACKOFF_KEYS,
    BREAKER_KEYS,
    BUDGET_KEYS,
    FAILED_HOSTS_KEYS,
    LIMITS_KEYS,
    PER_HOST_KEYS,
    PER_SIGNATURE_KEYS,
    RULE_KEYS,
    TOP_KEYS,
    WHEN_KEYS,
)
from app.policy.notify import (
    EMAIL_KEYS,
    NOTIFY_KEYS,
    ROUTE_KEYS,
    SLACK_KEYS,
    SMTP_KEYS,
    WEBHOOK_KEYS,
)
from app.policy.notify_model import EVENT_KINDS
from app.policy.schedule_reader import BLACKOUT_KEYS, SCHEDULE_KEYS

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
        *FAILED_HOSTS_KEYS,
        *PER_SIGNATURE_KEYS,
        *SCHEDULE_KEYS,
        *BLACKOUT_KEYS,
        *NOTIFY_KEYS,
        *WEBHOOK_KEYS,
        *SLACK_KEYS,
        *EMAIL_KEYS,
        *SMTP_KEYS,
        *ROUTE_KEYS,
    }
)
EXAMPLES = re.findall(r"^```yaml\n(.*?)^```$", DOC, re.M | re.S)


@pytest.mark.parametrize("key", KEYS)
def test_every_key_is_documented(key: str) -> None:
    assert f"`{key}" in DOC or f".{key}`" in DOC


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_notification_kind_is_documented(kind: str) -> None:
    assert f"| `{kind}` |" in DOC


@pytest.mark.parametrize("code", [*REASON_CODES, ReasonCode.NOT_MATCHED])
def test_every_reason_code_is_documented(code: str) -> None:
    assert f"| `{code}` |" in DOC or f"`{code}`" in DOC


def as_policy(example: str) -> str:
    """An example as a whole file: the fragments under "Examples" leave out `version: 1`."""
    return example if re.match(r"version:", example, re.M) else "version: 1\n" + example


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 10
    for key in ("failed_hosts", "per_signature", "blackouts", "ignore_blackouts"):
        assert any(key in example for example in EXAMPLES), key


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example-{n}" for n in range(len(EXAMPLES))])
def test_every_example_passes_policy_check(tmp_path: Path, example: str) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(as_policy(example), encoding="utf-8")
    result = CliRunner().invoke(check_command, [str(path)])
    assert result.exit_code == 0, result.output
    assert ": OK (version " in result.stdout
    assert result.stderr == ""  # no warnings either


def test_the_weekend_example_does_what_the_doc_says() -> None:
    """ "a restart due Friday 19:00 waits until Monday 06:00 (Berlin time)"."""
    (example,) = [e for e in EXAMPLES if "weekend-freeze" in e]
    schedule = parse_policy(as_policy(example)).schedule
    berlin = ZoneInfo("Europe/Berlin")
    found = blackout_at(schedule, datetime(2024, 5, 3, 19, 0, tzinfo=berlin))
    assert found is not None and found.name == "weekend-freeze"
    assert found.ends_at == datetime(2024, 5, 6, 6, 0, tzinfo=berlin)
