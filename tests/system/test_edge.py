"""The HTTP edge over real sockets, as `respawn serve` runs it (docs/security.md): chunked
bodies over the limit, proxies that are or are not trusted, foreign Host headers, headers."""

from __future__ import annotations

import http.client
import json
import re
import socket
from pathlib import Path

import pytest
import requests

from tests.feed import event
from tests.system.processes import TOKEN, base_env, migrate_cli, serve

pytestmark = pytest.mark.slow
LIMIT = 4096


def chunked_post(base: str, path: str, body: bytes, chunk: int = 1000) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        for start in range(0, len(body), chunk):
            part = body[start : start + chunk]
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("edge")
    url = f"sqlite:///{folder / 'edge.db'}"
    env = base_env(
        url, folder, RESPAWN_DISPATCHER="off", RESPAWN_MAX_BODY_BYTES=str(LIMIT),
        RESPAWN_TRUSTED_PROXIES="127.0.0.1/32", RESPAWN_ALLOWED_HOSTS="127.0.0.1,localhost",
        RESPAWN_SECURE_COOKIES="false",
    )  # fmt: skip
    migrate_cli(env)
    with serve(env, folder) as running:
        yield running


def test_a_chunked_body_over_the_limit_is_413_and_stores_nothing(served) -> None:  # type: ignore[no-untyped-def]
    big = json.dumps([event("runner_on_ok", 1, f"web{n}", event_id=f"big-{n}")
                      for n in range(60)]).encode()  # fmt: skip
    assert len(big) > LIMIT
    small = json.dumps(event("runner_on_ok", 1, "web1", event_id="small")).encode()

    too_large = chunked_post(served.base, f"/callbacks/{TOKEN}", big)
    fits = chunked_post(served.base, f"/callbacks/{TOKEN}", small)

    assert too_large[0] == 413 and json.loads(too_large[1])["error"] == "too_large"
    assert fits[0] == 202 and json.loads(fits[1]) == {"accepted": 1, "duplicates": 0}


def test_a_foreign_host_header_is_refused_not_redirected_to(served) -> None:  # type: ignore[no-untyped-def]
    host, port = served.base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/admin", headers={"Host": "evil.example"})
    answer = connection.getresponse()
    answer.read()
    connection.close()

    assert answer.status == 400
    assert "evil.example" not in (answer.getheader("Location") or "")


@pytest.mark.parametrize("path", ["/admin/no-such-page", "/admin/login/x", "/api/v1/nothing"])
def test_security_headers_are_on_every_answer(served, path: str) -> None:  # type: ignore[no-untyped-def]
    answer = requests.get(served.base + path, timeout=10)
    wrong_method = requests.delete(served.base + "/admin/login", timeout=10)

    for response in (answer, wrong_method):
        assert response.status_code in (404, 405)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def _login(base: str, forwarded_for: str, name: str, password: str) -> int:
    with requests.Session() as http_session:
        headers = {"X-Forwarded-For": forwarded_for}
        page = http_session.get(f"{base}/admin/login", headers=headers, timeout=10).text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        assert token
        answer = http_session.post(
            f"{base}/admin/login",
            data={"csrf_token": token.group(1), "name": name, "password": password},
            headers=headers,
            allow_redirects=False,
            timeout=10,
        )
        return answer.status_code


def test_the_throttle_keys_on_the_client_behind_a_trusted_proxy(served) -> None:  # type: ignore[no-untyped-def]
    # 21 failed sign-ins with made-up names, all through the proxy, from one client.
    statuses = [_login(served.base, "203.0.113.9", f"nobody{n}", "wrong-password-123")
                for n in range(21)]  # fmt: skip
    assert statuses[-1] == 429  # that client waits ...
    # ... and an operator behind the same proxy is not locked out.
    assert _login(served.base, "198.51.100.7", "nobody-else", "wrong-password-123") == 200


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'untrusted.db'}"
    env = base_env(url, tmp_path, RESPAWN_DISPATCHER="off", RESPAWN_SECURE_COOKIES="false")
    migrate_cli(env)
    with serve(env, tmp_path) as running:
        # No trusted proxies: whatever X-Forwarded-For says, these all come from 127.0.0.1.
        statuses = [_login(running.base, f"203.0.113.{n}", f"nobody{n}", "wrong-password-123")
                    for n in range(21)]  # fmt: skip
        assert statuses[-1] == 429
        assert _login(running.base, "198.51.100.7", "nobody-else", "wrong-password-123") == 429
