"""Real receivers on loopback for the notification tests: an HTTP server that checks Standard
Webhooks signatures with the `standardwebhooks` library (not respawn's own code), records
what it got and can be told to fail or hang; an SMTP server (`aiosmtpd`) that parses the mail.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` until it gives something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    """What the receiver answered."""
    verified: bool | None
    """The signature checked out (None: the path takes no signature)."""
    repeat: bool
    """Its `webhook-id` was seen before (the receiver's de-duplication)."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


class WebhookReceiver:
    """A threaded HTTP server. Paths under /hook are signed webhooks (checked with the
    secret it was given); any other path (a Slack incoming webhook) is taken as it comes.

    `fail(n, status)` answers the next n requests with `status`; `hang(n)` keeps the next n
    without an answer until `close()`; `hold(n)` takes the next n in (records them, as a
    receiver that acted on them) and only then keeps them without an answer.
    """

    def __init__(self, secret: str | None, answer: str = "ok") -> None:
        self.secret = secret
        self.answer = answer
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._hangs = 0
        self._holds = 0
        self._seen: set[str] = set()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read `received`

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def fail(self, times: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def hang(self, times: int) -> None:
        with self._lock:
            self._hangs += times

    def hold(self, times: int) -> None:
        with self._lock:
            self._holds += times

    def requests(self, path_prefix: str = "") -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith(path_prefix)]

    def accepted(self, path_prefix: str = "") -> list[Received]:
        return [r for r in self.requests(path_prefix) if r.status == 200]

    def unique(self, path_prefix: str = "/hook") -> list[Received]:
        """What an application behind the receiver would act on: accepted, first of its id."""
        return [r for r in self.accepted(path_prefix) if not r.repeat]

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            hang = self._hangs > 0
            self._hangs -= hang
        if hang:
            self._released.wait(30)
            return  # the client gave up waiting; nothing is recorded as accepted
        verified: bool | None = None
        if request.path.startswith("/hook") and self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        with self._lock:
            status = self._failures.pop(0) if self._failures else 200
            if verified is False:
                status = 401
            key = headers.get("webhook-id")
            repeat = status == 200 and key is not None and key in self._seen
            if status == 200 and key is not None:
                self._seen.add(key)
            self.received.append(Received(request.path, headers, body, status, verified, repeat))
            hold = self._holds > 0
            self._holds -= hold
        if hold:
            self._released.wait(30)
            return
        text = (self.answer if status == 200 else f"receiver failed ({status})").encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/plain")
        request.send_header("Content-Length", str(len(text)))
        request.end_headers()
        request.wfile.write(text)

    def close(self) -> None:
        self._released.set()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None
    tls: bool
    """It came over a connection STARTTLS had secured."""

    @property
    def plain(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


class SMTPReceiver:
    """An aiosmtpd server on loopback; with `users`, it offers AUTH (LOGIN, PLAIN), and each
    mail records who logged in to send it. With a certificate it requires STARTTLS first
    (and offers AUTH only then); without, it offers AUTH in the clear and no STARTTLS."""

    def __init__(
        self, users: dict[str, str] | None = None, certificate: tuple[Path, Path] | None = None
    ) -> None:
        self.mails: list[Mail] = []
        self.logins: list[tuple[str, bool]] = []
        self.users = users
        receiver = self

        class Handler:
            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                content = envelope.content
                assert isinstance(content, bytes)
                message = email.message_from_bytes(content, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                login = session.auth_data.login.decode() if session.auth_data else None
                tls = bool(session.ssl)
                receiver.mails.append(
                    Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message, login, tls)
                )
                return "250 2.0.0 queued as respawn-test"

        options: dict[str, Any] = {}
        if users is not None:
            options.update(authenticator=self._authenticate, auth_require_tls=bool(certificate))
        if certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
            options.update(tls_context=context, require_starttls=True)
        self.port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()
        self._running = True

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword) and self.users is not None
        name, password = data.login.decode(), data.password.decode()
        ok = self.users.get(name) == password
        self.logins.append((mechanism, ok))
        # handled=False: the server itself answers a refusal (535).
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def close(self) -> None:
        if self._running:
            self._running = False
            self.controller.stop()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "respawn test mail server")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "mail-cert.pem", folder / "mail-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
