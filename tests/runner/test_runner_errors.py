"""Error bodies of every shape the Runner's clients met become short, secret-free messages."""

from __future__ import annotations

import pytest

from app.runner.errors import (
    MAX_MESSAGE_CHARS,
    RunnerRejected,
    RunnerTimeout,
    message_from_body,
    scrub,
)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            b'{"message": "We didn\'t recognize the username"}',
            "application/json",
            "We didn't recognize the username",
        ),
        (b'{"error": "invalid_grant"}', "application/json", "invalid_grant"),
        (b'{"error": {"message": "nested"}}', "application/json", "nested"),
        (
            b'{"message": "The request is invalid.", "modelState": '
            b'{"hosts[0].id": ["The id field is required."], "size": ["too big", "really"]}}',
            "application/json",
            "The request is invalid. (hosts[0].id: The id field is required.; "
            "size: too big; really)",
        ),
        (b'{"modelState": {"": ["Body missing."]}}', "application/json", "Body missing."),
        (b'[{"message": "first"}, {"message": "second"}]', "application/json", "first; second"),
        (b'["one", "two"]', "application/json", "one; two"),
        (b"Service Unavailable", "text/plain", "Service Unavailable"),
        (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html", "502 Bad Gateway"),
        (b"", "text/plain", "(empty answer)"),
        (b'{"unexpected": 1}', "application/json", '{"unexpected": 1}'),
        (b"{not json", "application/json", "{not json"),
        ('{"message": "caf\u00e9"}'.encode(), "application/json", "caf\u00e9"),
    ],
)
def test_error_body_shapes(body: bytes, content_type: str, message: str) -> None:
    assert message_from_body(body, content_type) == message


def test_messages_are_bounded() -> None:
    text = message_from_body(b'{"message": "' + b"x " * 1000 + b'"}', "application/json")
    assert len(text) <= MAX_MESSAGE_CHARS
    assert text.endswith("\u2026")


def test_known_secrets_are_removed_before_truncation() -> None:
    secret = "s3cr3t-value"
    body = ("a" * 290 + secret).encode()
    text = message_from_body(body, "text/plain", [secret])
    assert "s3cr3t" not in text


def test_secret_fields_in_json_bodies_are_redacted() -> None:
    body = b'{"message": "bad", "modelState": {"password": ["hunter2"], "sshPrivateKey": "AAAA"}}'
    text = message_from_body(body, "application/json")
    assert "hunter2" not in text and "AAAA" not in text


def test_scrub_patterns() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2lnbmF0dXJlLXZhbHVl"
    b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk="
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
    text = scrub(f"a {jwt} b {b64} c {pem} d Bearer abcdefghijkl")
    for secret in (jwt, b64, "MIIE", "abcdefghijkl"):
        assert secret not in text
    # ids and paths stay readable
    path = "/jobs/XXXX/1111505e-6773-494a-b2bf-d2cc2684710d/executions/44fdcfa2-6a7f/restart"
    assert scrub(path) == path
    assert scrub("b087e1a44c79d0576d7cccd249d3e71a3c54fe12") == (
        "b087e1a44c79d0576d7cccd249d3e71a3c54fe12"
    )


def test_error_text_and_attributes() -> None:
    exc = RunnerRejected("not failed", status_code=400, operation="restart (POST /x)")
    assert str(exc) == "restart (POST /x) HTTP 400: not failed"
    assert repr(exc) == "RunnerRejected(status_code=400, message='not failed', sent=True)"
    assert exc.kind == "rejected"
    timeout = RunnerTimeout("no answer")
    assert timeout.status_code is None and timeout.sent is True
