"""A fake Runner behind a requests transport adapter: no sockets, every request recorded."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

API = "https://runner.test"
AUTH = "https://auth.test/v2/authentication/login"


def make_jwt(exp: float, nbf: float | None = None) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    payload = {"unique_name": "u", "exp": exp, "nbf": nbf if nbf is not None else exp - 100}
    return f"{part({'alg': 'HS256'})}.{part(payload)}.c2lnbmF0dXJl"


@dataclass
class Seen:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    timeout: Any

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def path(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]


Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]] | BaseException


class FakeRunner(BaseAdapter):
    """Answers login with `tokens` in turn, and API calls with `handler` or queued replies."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.tokens: list[str] = ["token-1", "token-2", "token-3", "token-4"]
        self.login_reply: Callable[[Seen], Reply] | None = None
        self.replies: list[Reply] = []
        self.handler: Callable[[Seen], Reply] | None = None
        self._lock = threading.Lock()

    @property
    def logins(self) -> list[Seen]:
        return [s for s in self.seen if s.url == AUTH]

    @property
    def api_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.url != AUTH]

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        seen = Seen(request.method or "", request.url or "", dict(request.headers), body, timeout)
        with self._lock:
            self.seen.append(seen)
            if seen.url == AUTH:
                if self.login_reply is not None:
                    reply = self.login_reply(seen)
                else:
                    token = self.tokens.pop(0)
                    reply = (200, {"userName": "u", "accountAlias": "XXXX", "bearerToken": token})
            elif self.handler is not None:
                reply = self.handler(seen)
            else:
                reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        status, payload, *rest = reply
        headers = rest[0] if rest else {}
        response = requests.Response()
        response.status_code = status
        if isinstance(payload, bytes | str):
            content = payload.encode() if isinstance(payload, str) else payload
            response.headers = CaseInsensitiveDict({"Content-Type": "text/plain", **headers})
        else:
            content = b"" if payload is None else json.dumps(payload).encode()
            response.headers = CaseInsensitiveDict({"Content-Type": "application/json", **headers})
        response._content = content
        response.url = seen.url
        response.request = request
        return response

    def close(self) -> None:
        pass


def fake_session(fake: FakeRunner) -> requests.Session:
    session = requests.Session()
    session.mount("https://", fake)
    return session
