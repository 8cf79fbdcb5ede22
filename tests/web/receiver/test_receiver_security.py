"""Standard Webhooks signatures, secrets in logs, and failures that must not become 500s."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError

from app import webhooks as signatures
from app.intake import intake as intake_module
from tests.conftest import CALLBACK_TOKEN
from tests.feed import event

URL = f"/callbacks/{CALLBACK_TOKEN}"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed(
    body: bytes, webhook_id: str = "msg_1", at: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    at = int(time.time()) if at is None else at
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(at),
        "webhook-signature": signatures.sign(secret, webhook_id, at, body),
    }


@pytest.fixture
def signed_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(webhook_secret=SECRET)


def test_valid_signature_is_accepted(signed_app: Flask) -> None:
    body = json.dumps(event("runner_on_ok", 1, host="web1")).encode()

    response = signed_app.test_client().post(
        URL, data=body, content_type="application/json", headers=signed(body)
    )

    assert response.status_code == 202


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, h: (body + b" ", h),
        lambda body, h: (body, {**h, "webhook-signature": "v1,AAAA"}),
        lambda body, h: (body, {k: v for k, v in h.items() if k != "webhook-signature"}),
        lambda body, h: (body, signed(body, at=int(time.time()) - 3600)),
        lambda body, h: (body, signed(body, secret="whsec_b3RoZXItc2VjcmV0LXZhbHVl")),
        lambda body, h: (body, {**h, "webhook-timestamp": "soon"}),
    ],
    ids=["body-changed", "bad-signature", "missing", "too-old", "other-secret", "bad-time"],
)
def test_bad_signature_is_refused_and_nothing_stored(
    signed_app: Flask,
    tamper: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]],
    api_headers: dict[str, str],
) -> None:
    body = json.dumps(event("runner_on_ok", 1, host="web1")).encode()
    data, headers = tamper(body, signed(body))
    client = signed_app.test_client()

    response = client.post(URL, data=data, content_type="application/json", headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"] == "bad_signature"
    assert client.get("/api/v1/executions", headers=api_headers).get_json()["items"] == []


def test_database_outage_spools_the_callback_and_stores_it_when_the_database_returns(
    app: Flask, monkeypatch: pytest.MonkeyPatch, api_headers: dict[str, str], tmp_path: Path
) -> None:
    down = True
    real_store = intake_module.store

    def store(*args: Any, **kwargs: Any) -> Any:
        if down:
            raise OperationalError("INSERT ...", {}, Exception("server closed the connection"))
        return real_store(*args, **kwargs)

    monkeypatch.setattr(intake_module, "store", store)
    client = app.test_client()

    response = client.post(URL, json=event("runner_on_ok", 1, host="web1"))

    assert response.status_code == 202
    assert response.get_json() == {"accepted": 1, "duplicates": 0}
    assert client.get("/api/v1/executions", headers=api_headers).get_json()["items"] == []
    assert len(list((tmp_path / "spool").glob("spool-*.jsonl"))) == 1
    down = False
    deadline = time.monotonic() + 15
    while not client.get("/api/v1/executions", headers=api_headers).get_json()["items"]:
        assert time.monotonic() < deadline, "the spooled callback was never stored"
        time.sleep(0.05)
    assert list((tmp_path / "spool").glob("spool-*.jsonl")) == []


def test_a_callback_neither_stored_nor_spooled_is_a_bare_503(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("internal detail with sshPrivateKey=PLANTED-abc-123")

    monkeypatch.setattr(intake_module, "store", broken)
    caplog.set_level("ERROR")

    response = app.test_client().post(URL, json=event("runner_on_ok", 1, host="web1"))

    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "unavailable"
    assert "internal detail" not in json.dumps(body)
    assert "callbacks could not be stored" in caplog.text
    assert "internal detail with sshPrivateKey=[redacted]" in caplog.text
    assert "PLANTED-abc-123" not in caplog.text


def test_unexpected_error_is_a_bare_500(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("internal detail with sshPrivateKey=PLANTED-abc-123")

    monkeypatch.setattr("app.web.receiver.views.parse_deliveries", broken)
    caplog.set_level("ERROR")

    response = app.test_client().post(URL, json=event("runner_on_ok", 1, host="web1"))

    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "internal detail" not in text and "Traceback" not in text
    assert response.get_json()["error"] == "internal_error"
    # The log tells the operator what broke, with the traceback, and never the secret.
    assert "unhandled error on POST /callbacks/" in caplog.text
    assert "internal detail with sshPrivateKey=[redacted]" in caplog.text
    assert "PLANTED-abc-123" not in caplog.text


def test_secrets_sent_to_the_receiver_stay_out_of_logs(
    app: Flask, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG")
    planted = "-----BEGIN OPENSSH PRIVATE KEY-----\nZZPLANTEDZZ\n-----END OPENSSH PRIVATE KEY-----"
    item = event("runner_on_failed", 1, host="web1", msg=planted, stderr=planted)
    item["credentials"] = {"password": "pw-PLANTED-42"}
    client = app.test_client()

    client.post(URL, json=item)
    client.post(URL, data=b"{bad json " + planted.encode(), content_type="application/json")
    client.post(URL, json={"execution_id": planted, "status": "BAD"})

    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert "ZZPLANTEDZZ" not in text
        assert "pw-PLANTED-42" not in text
        assert CALLBACK_TOKEN not in text
