"""Redaction at its edges: every secret key, how keys are normalised, empty values, depth,
and each free-text pattern (docs/operations.md: secrets never reach storage or logs).

These tests kill the mutants of app/redact.py that tests/test_redact.py leaves alive
(docs/TESTING.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from app.redact import REDACTED, redact, redact_text

SECRET_KEYS = (
    "sshPrivateKey", "privateKey", "password", "passwd", "credentials", "bearerToken", "token",
    "accessToken", "authorization", "secret", "apiKey",
)  # fmt: skip


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_every_secret_key_is_redacted(key: str) -> None:
    assert redact({key: "s3cr3t-value", "kept": "visible"}) == {key: REDACTED, "kept": "visible"}


@pytest.mark.parametrize(
    "key", ["SSH_PRIVATE_KEY", "ssh-private-key", "Api_Key", "dbPassword", "gitPrivateKey",
            "client_secret", "CLIENT-SECRET"],
)  # fmt: skip
def test_secret_keys_are_known_in_any_case_with_underscores_dashes_or_a_prefix(key: str) -> None:
    assert redact({key: "s3cr3t-value"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["passwordHint", "tokens", "secretary", "keyId", "host"])
def test_other_keys_are_kept(key: str) -> None:
    assert redact({key: "value"}) == {key: "value"}


def test_keys_that_are_not_text_are_never_secret_and_become_text() -> None:
    assert redact({1: "one", None: "none"}) == {"1": "one", "None": "none"}


@pytest.mark.parametrize("empty", [None, ""])
def test_an_empty_secret_is_kept_empty(empty: Any) -> None:
    """An empty value says "no key was given", which an operator needs to see."""
    assert redact({"password": empty}) == {"password": empty}


def test_secrets_inside_lists_and_tuples_are_redacted() -> None:
    value = {"hosts": ({"password": "pw"}, [{"token": "tk"}]), "count": 3, "ok": True}

    assert redact(value) == {"hosts": [{"password": REDACTED}, [{"token": REDACTED}]],
                             "count": 3, "ok": True}  # fmt: skip


def nested(levels: int, inner: Any) -> Any:
    for _ in range(levels):
        inner = [inner]
    return inner


def test_nesting_is_followed_sixty_four_levels_deep_and_cut_below() -> None:
    assert redact(nested(64, "plain")) == nested(64, "plain")
    assert redact(nested(65, "plain")) == nested(65, REDACTED)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key: -----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY----- ok",
         f"key: {REDACTED} ok"),
        ("cut: -----BEGIN RSA PRIVATE KEY-----\nAAAA and the rest", f"cut: {REDACTED}"),
        ("Authorization: Bearer abcdefgh.ij", f"Authorization: Bearer {REDACTED}"),
        ("bearer abcdefg", "bearer abcdefg"),
        ("POST /callbacks/tok-123?x=1 200", f"POST /callbacks/{REDACTED}?x=1 200"),
        ("password=hunter2&user=bob", f"password={REDACTED}&user=bob"),
        ('{"sshPrivateKey": "AAAA", "host": "web1"}',
         f'{{"sshPrivateKey": "{REDACTED}", "host": "web1"}}'),
        ("api_key: abc123, next", f"api_key: {REDACTED}, next"),
        ("ACCESS_TOKEN=xyz", f"ACCESS_TOKEN={REDACTED}"),
        ("credentials:'c1' secret=s2", f"credentials:'{REDACTED}' secret={REDACTED}"),
        ("nothing secret here", "nothing secret here"),
    ],
)  # fmt: skip
def test_secrets_in_free_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact({"message": text}) == {"message": expected}
