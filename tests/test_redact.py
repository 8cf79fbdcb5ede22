"""Secrets out of payloads and text, at any depth."""

from __future__ import annotations

import logging

import pytest

from app.logging_setup import configure_logging
from app.redact import REDACTED, redact, redact_text

KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAplanted\n-----END RSA PRIVATE KEY-----"


def test_secret_fields_at_any_depth() -> None:
    payload = {
        "sshPrivateKey": "TUlJRW93SUJBQUtDQVF",
        "hosts": [{"id": "web1", "sshPrivateKey": "abc"}],
        "repository": {"credentials": {"username": "u", "password": "p"}},
        "bearerToken": "eyJhbGciOi",
        "message": {"msg": f"oops {KEY}"},
        "kept": {"host": "web1", "count": 3, "empty_password": ""},
    }

    cleaned = redact(payload)

    assert cleaned["sshPrivateKey"] == REDACTED
    assert cleaned["hosts"] == [{"id": "web1", "sshPrivateKey": REDACTED}]
    assert cleaned["repository"]["credentials"] == REDACTED
    assert cleaned["bearerToken"] == REDACTED
    assert "planted" not in cleaned["message"]["msg"]
    assert cleaned["kept"] == {"host": "web1", "count": 3, "empty_password": ""}
    assert payload["sshPrivateKey"] == "TUlJRW93SUJBQUtDQVF"  # the input is not changed


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"stderr: {KEY} end", "MIIEowIBAAKCAQEAplanted"),
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("failed: sshPrivateKey=LS0tLS1CRUdJTi in body", "LS0tLS1CRUdJTi"),
        ('{"password": "hunter2-planted", "user": "ops"}', "hunter2-planted"),
        ("POST /callbacks/s3cr3t-t0ken-value HTTP/1.1", "s3cr3t-t0ken-value"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\ntruncated-without-end", "truncated-without-end"),
    ],
)
def test_secrets_in_text(text: str, gone: str) -> None:
    assert gone not in redact_text(text)


def test_deep_nesting_is_bounded() -> None:
    value: object = "x"
    for _ in range(200):
        value = {"a": value}

    assert "x" not in repr(redact(value))


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("INFO")
    caplog.set_level("INFO")

    logging.getLogger("respawn.test").info("sending key %s to %s", KEY, "/callbacks/tok3n-abc")

    assert "MIIEowIBAAKCAQEAplanted" not in caplog.text
    assert "tok3n-abc" not in caplog.text
    assert REDACTED in caplog.text
