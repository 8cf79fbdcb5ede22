"""The policy's `notify:` section as data: channels, routes, the digest window, and which
channels an event goes to (docs/policy.md, "Notifications"). Read by `app.policy.notify`.

Pure: secrets are named here (environment variables), never held; the sender resolves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from app.policy.patterns import Glob

ChannelType = Literal["webhook", "slack", "email"]

EVENT_KINDS: Final[tuple[str, ...]] = (
    "restart_sent",
    "restart_failed",
    "gave_up",
    "host_quarantined",
    "host_released",
    "breaker_opened",
    "breaker_closed",
    "policy_refused",
    "paused",
    "resumed",
    "callbacks_spooled",
)
"""Every kind of notification; docs/policy.md says what each carries."""

CHANNEL_TYPES: Final[tuple[str, ...]] = ("webhook", "slack", "email")
DEFAULT_DIGEST: Final = timedelta(minutes=5)


@dataclass(frozen=True)
class SMTPServer:
    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None
    """The environment variable holding the password (or NAME_FILE naming a file)."""
    timeout: float = 10.0


@dataclass(frozen=True)
class Channel:
    """Where notifications go. Secrets are named by environment variable, never written here:
    a webhook's signing secret (`whsec_...`), a Slack incoming-webhook URL, an SMTP password."""

    name: str
    type: ChannelType
    url: str | None = None
    """A webhook's URL (not secret)."""
    secret_env: str | None = None
    """webhook: the signing secret's variable; slack: the variable holding the URL."""
    to: tuple[str, ...] = ()
    sender: str | None = None
    smtp: SMTPServer | None = None
    line: int = 0


@dataclass(frozen=True)
class Route:
    """Events of these kinds (all when empty), of jobs and accounts matching these globs and
    decided by these rules, go to these channels."""

    name: str
    channels: tuple[str, ...]
    events: tuple[str, ...] = ()
    jobs: tuple[Glob, ...] = ()
    accounts: tuple[Glob, ...] = ()
    rules: tuple[str, ...] = ()
    line: int = 0

    def matches(self, event: EventFacts) -> bool:
        if self.events and event.kind not in self.events:
            return False
        if self.jobs and not any(
            g.matches(name) for g in self.jobs for name in event.job_names if name
        ):
            return False
        if self.accounts and not any(g.matches(event.account or "") for g in self.accounts):
            return False
        return not self.rules or (event.rule or "") in self.rules


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple[Channel, ...] = ()
    routes: tuple[Route, ...] = ()
    default: tuple[str, ...] = ()
    """Channels of events no route takes."""
    digest: timedelta = DEFAULT_DIGEST
    """Events of one kind for one job within this long fold into one digest (0s: never)."""

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    @property
    def enabled(self) -> bool:
        return bool(self.channels)


@dataclass(frozen=True)
class EventFacts:
    """What routing looks at."""

    kind: str
    job_names: tuple[str, ...] = ()
    """The job's id, and its description when known."""
    account: str | None = None
    rule: str | None = None


@dataclass(frozen=True)
class Destination:
    route: str
    """The route's name, or "default"."""
    channel: str


def destinations(
    config: NotifyConfig, event: EventFacts, muted: frozenset[str] = frozenset()
) -> list[Destination]:
    """The channels an event goes to: every route it matches (each channel once, the first
    route naming it), or the default channels when no route takes it. A muted route is
    sends nothing, and still takes the event away from the default channels."""
    found: dict[str, Destination] = {}
    matched = False
    for route in config.routes:
        if not route.matches(event):
            continue
        matched = True
        if route.name in muted:
            continue
        for channel in route.channels:
            found.setdefault(channel, Destination(route.name, channel))
    if not matched and "default" not in muted:
        for channel in config.default:
            found.setdefault(channel, Destination("default", channel))
    return list(found.values())
