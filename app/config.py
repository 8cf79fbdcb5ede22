"""Settings, read from `RESPAWN_*` environment variables once, in `create_app`.

Every secret may instead come from a file named by `<NAME>_FILE` (Docker and Kubernetes
secrets). Required settings that are missing stop the service with a message that names them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_RUNNER_API_URL = "https://api.runner.ctl.io"
DEFAULT_RUNNER_AUTH_URL = "https://api.ctl.io/v2/authentication/login"


class ConfigError(RuntimeError):
    """The settings are incomplete or invalid; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    secret_key: str = field(repr=False)
    callback_tokens: tuple[str, ...] = field(repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    policy_file: str = "policy.yaml"
    runner_api_url: str = DEFAULT_RUNNER_API_URL
    runner_auth_url: str = DEFAULT_RUNNER_AUTH_URL
    runner_username: str | None = None
    runner_password: str | None = field(default=None, repr=False)
    runner_token: str | None = field(default=None, repr=False)
    ssh_keys_file: str | None = None
    runner_connect_timeout: float = 3.05
    runner_read_timeout: float = 10.0
    dispatcher: str = "embedded"
    # Dispatcher threads in each web process (embedded): restarts are sent in parallel.
    dispatcher_threads: int = 4
    max_body_bytes: int = 1024 * 1024
    max_batch_items: int = 500
    lease_seconds: float = 60.0
    dispatch_interval: float = 2.0
    reconcile_interval: float = 300.0
    max_send_attempts: int = 8
    retry_base_seconds: float = 5.0
    uncertain_retry_seconds: float = 60.0
    reconcile_accounts: tuple[str, ...] = ()
    reconcile_max_pages: int = 20
    # How far back the reconciler looks for failures whose callbacks were lost.
    reconcile_window: float = 6 * 3600.0
    policy_check_interval: float = 2.0
    secure_cookies: bool = True
    # Admin UI sessions end after this long without use, and after this long in any case.
    session_idle: float = 12 * 3600.0
    session_lifetime: float = 7 * 24 * 3600.0
    log_level: str = "INFO"
    # Where operators reach the admin UI, for links in notifications (none: no links).
    public_url: str | None = None
    # "text" (one readable line per record) or "json" (one JSON object per line).
    log_format: str = "text"
    # The front door: answer callbacks once stored ("durable") or once also applied
    # ("processed"); how long a callback waits for the database before it is spooled.
    callback_ack: str = "durable"
    intake_timeout: float = 1.0
    spool_dir: str = "instance/spool"
    # Reverse proxies whose X-Forwarded-* headers are believed (CIDRs), and how many deep.
    trusted_proxies: tuple[str, ...] = ()
    proxy_hops: int = 1
    # Only these networks may post callbacks (CIDRs; empty: anyone with the token).
    callback_allow_from: tuple[str, ...] = ()
    # Host names the service answers to (empty: any); redirects are built from them.
    allowed_hosts: tuple[str, ...] = ()
    testing: bool = False

    @property
    def runner_call_seconds(self) -> float:
        """The longest one Runner call can take before the client gives up on it."""
        return self.runner_connect_timeout + self.runner_read_timeout

    @property
    def runner_configured(self) -> bool:
        return bool(self.runner_token or (self.runner_username and self.runner_password))


# Environment variable → (field, kind). Kinds: str, secret (has a _FILE variant), list, int,
# float, bool.
_ENV: dict[str, tuple[str, str]] = {
    "RESPAWN_DATABASE_URL": ("database_url", "secret"),
    "RESPAWN_SECRET_KEY": ("secret_key", "secret"),
    "RESPAWN_CALLBACK_TOKENS": ("callback_tokens", "secret_list"),
    "RESPAWN_WEBHOOK_SECRET": ("webhook_secret", "secret"),
    "RESPAWN_API_TOKENS": ("api_tokens", "secret_list"),
    "RESPAWN_POLICY_FILE": ("policy_file", "str"),
    "RESPAWN_RUNNER_API_URL": ("runner_api_url", "str"),
    "RESPAWN_RUNNER_AUTH_URL": ("runner_auth_url", "str"),
    "RESPAWN_RUNNER_USERNAME": ("runner_username", "str"),
    "RESPAWN_RUNNER_PASSWORD": ("runner_password", "secret"),
    "RESPAWN_RUNNER_TOKEN": ("runner_token", "secret"),
    "RESPAWN_SSH_KEYS_FILE": ("ssh_keys_file", "str"),
    "RESPAWN_RUNNER_CONNECT_TIMEOUT": ("runner_connect_timeout", "float"),
    "RESPAWN_RUNNER_READ_TIMEOUT": ("runner_read_timeout", "float"),
    "RESPAWN_DISPATCHER": ("dispatcher", "str"),
    "RESPAWN_DISPATCHER_THREADS": ("dispatcher_threads", "int"),
    "RESPAWN_MAX_BODY_BYTES": ("max_body_bytes", "int"),
    "RESPAWN_MAX_BATCH_ITEMS": ("max_batch_items", "int"),
    "RESPAWN_LEASE_SECONDS": ("lease_seconds", "float"),
    "RESPAWN_DISPATCH_INTERVAL": ("dispatch_interval", "float"),
    "RESPAWN_RECONCILE_INTERVAL": ("reconcile_interval", "float"),
    "RESPAWN_MAX_SEND_ATTEMPTS": ("max_send_attempts", "int"),
    "RESPAWN_RETRY_BASE_SECONDS": ("retry_base_seconds", "float"),
    "RESPAWN_UNCERTAIN_RETRY_SECONDS": ("uncertain_retry_seconds", "float"),
    "RESPAWN_RECONCILE_ACCOUNTS": ("reconcile_accounts", "list"),
    "RESPAWN_RECONCILE_MAX_PAGES": ("reconcile_max_pages", "int"),
    "RESPAWN_RECONCILE_WINDOW": ("reconcile_window", "float"),
    "RESPAWN_POLICY_CHECK_INTERVAL": ("policy_check_interval", "float"),
    "RESPAWN_SECURE_COOKIES": ("secure_cookies", "bool"),
    "RESPAWN_SESSION_IDLE": ("session_idle", "float"),
    "RESPAWN_TRUSTED_PROXIES": ("trusted_proxies", "list"),
    "RESPAWN_PROXY_HOPS": ("proxy_hops", "int"),
    "RESPAWN_CALLBACK_ALLOW_FROM": ("callback_allow_from", "list"),
    "RESPAWN_ALLOWED_HOSTS": ("allowed_hosts", "list"),
    "RESPAWN_SESSION_LIFETIME": ("session_lifetime", "float"),
    "RESPAWN_LOG_LEVEL": ("log_level", "str"),
    "RESPAWN_LOG_FORMAT": ("log_format", "str"),
    "RESPAWN_PUBLIC_URL": ("public_url", "str"),
    "RESPAWN_CALLBACK_ACK": ("callback_ack", "str"),
    "RESPAWN_INTAKE_TIMEOUT": ("intake_timeout", "float"),
    "RESPAWN_SPOOL_DIR": ("spool_dir", "str"),
}


def _read(environ: Mapping[str, str], name: str, secret: bool) -> str | None:
    if secret and environ.get(f"{name}_FILE"):
        path = Path(environ[f"{name}_FILE"])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    value = environ.get(name)
    return value.strip() if value is not None and value.strip() != "" else None


def _convert(name: str, kind: str, raw: str) -> Any:
    try:
        if kind.endswith("list"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
    except ValueError:
        raise ConfigError(f"{name}: not a valid {kind} value") from None
    return raw


def default_database_url(instance_path: str) -> str:
    return "sqlite:///" + str(Path(instance_path) / "respawn.db")


def database_url_from_env(instance_path: str, environ: Mapping[str, str] | None = None) -> str:
    """Only the database URL (migrations need nothing else)."""
    environ = os.environ if environ is None else environ
    url = _read(environ, "RESPAWN_DATABASE_URL", secret=True)
    return url if url is not None else default_database_url(instance_path)


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    instance_path: str = "instance",
) -> Settings:
    """Build the settings from the environment, then apply `overrides` (tests, the demo)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (attr, kind) in _ENV.items():
        raw = _read(environ, name, secret=kind.startswith("secret"))
        if raw is not None:
            values[attr] = _convert(name, kind, raw)
    values.update(overrides or {})
    testing = bool(values.get("testing"))

    missing = []
    if not values.get("callback_tokens"):
        missing.append("RESPAWN_CALLBACK_TOKENS")
    if not values.get("secret_key"):
        if testing:
            values["secret_key"] = secrets.token_hex(32)
        else:
            missing.append("RESPAWN_SECRET_KEY")
    if missing:
        raise ConfigError(
            "missing required setting(s): "
            + ", ".join(missing)
            + " (set the variable, or NAME_FILE pointing at a file that holds it)"
        )
    values.setdefault("database_url", default_database_url(instance_path))
    values.setdefault("spool_dir", str(Path(instance_path) / "spool"))
    public_url = values.get("public_url")
    if public_url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", str(public_url)):
        raise ConfigError("RESPAWN_PUBLIC_URL: an http:// or https:// URL of the admin UI's host")
    if values.get("log_format", "text") not in {"text", "json"}:
        raise ConfigError("RESPAWN_LOG_FORMAT: must be 'text' or 'json'")
    if values.get("callback_ack", "durable") not in {"durable", "processed"}:
        raise ConfigError("RESPAWN_CALLBACK_ACK: must be 'durable' or 'processed'")
    if not 0 < float(values.get("intake_timeout", 1.0)) <= 30:
        raise ConfigError("RESPAWN_INTAKE_TIMEOUT: seconds, more than 0 and at most 30")
    if values.get("dispatcher", "embedded") not in {"embedded", "off"}:
        raise ConfigError("RESPAWN_DISPATCHER: must be 'embedded' or 'off'")
    if not 1 <= int(values.get("dispatcher_threads", 4)) <= 64:
        raise ConfigError("RESPAWN_DISPATCHER_THREADS: a whole number from 1 to 64")
    if isinstance(values.get("callback_tokens"), str):
        values["callback_tokens"] = (values["callback_tokens"],)
    for key in ("api_tokens", "trusted_proxies", "callback_allow_from", "allowed_hosts"):
        if isinstance(values.get(key), str):
            values[key] = (values[key],)
    for token in values["callback_tokens"]:
        if len(token) < 16:
            raise ConfigError("RESPAWN_CALLBACK_TOKENS: each token needs at least 16 characters")
    for token in values.get("api_tokens", ()):
        if len(token) < 16:
            raise ConfigError("RESPAWN_API_TOKENS: each token needs at least 16 characters")
    if len(values["secret_key"]) < 32:
        raise ConfigError("RESPAWN_SECRET_KEY: needs at least 32 characters (a random string)")
    for name, key in (
        ("RESPAWN_TRUSTED_PROXIES", "trusted_proxies"),
        ("RESPAWN_CALLBACK_ALLOW_FROM", "callback_allow_from"),
    ):
        for value in values.get(key, ()):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ConfigError(f"{name}: {value!r} is not an address or a CIDR") from None
    if not 1 <= int(values.get("proxy_hops", 1)) <= 5:
        raise ConfigError("RESPAWN_PROXY_HOPS: a whole number from 1 to 5")
    lease = float(values.get("lease_seconds", Settings.lease_seconds))
    call = float(values.get("runner_connect_timeout", Settings.runner_connect_timeout)) + float(
        values.get("runner_read_timeout", Settings.runner_read_timeout)
    )
    if lease <= call:
        raise ConfigError(
            f"RESPAWN_LEASE_SECONDS ({lease:g}) must exceed the Runner connect + read timeouts "
            f"({call:g} s): a claim must outlast the call it covers"
        )
    known = {f.name for f in fields(Settings)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError("unknown setting(s): " + ", ".join(sorted(unknown)))
    return Settings(**values)


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)
