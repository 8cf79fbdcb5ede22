"""Reading the policy's `notify:` section (a part of `app.policy.loader`'s parser): channels,
routes, the default channels and the digest window, every problem with its line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Final, TypeVar

import yaml

from app.policy.notify_model import (
    CHANNEL_TYPES,
    DEFAULT_DIGEST,
    EVENT_KINDS,
    Channel,
    NotifyConfig,
    Route,
    SMTPServer,
)
from app.policy.patterns import Glob
from app.policy.reader import Entries, NodeReader

NOTIFY_KEYS: Final = ("channels", "routes", "default", "digest")
WEBHOOK_KEYS: Final = ("type", "url", "secret")
SLACK_KEYS: Final = ("type", "url")
EMAIL_KEYS: Final = ("type", "to", "from", "smtp")
SMTP_KEYS: Final = ("host", "port", "starttls", "username", "password", "timeout")
ROUTE_KEYS: Final = ("name", "events", "jobs", "accounts", "rules", "channels")
MAX_CHANNELS: Final = 50
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")

T = TypeVar("T")


class NotifyReader(NodeReader[T]):
    """`NodeReader` with the readers of the `notify:` section."""

    def notify(self, node: yaml.Node) -> NotifyConfig:
        if self.is_null(node):
            return NotifyConfig()
        entries = self.mapping(node, "notify", NOTIFY_KEYS, " such as {channels: ..., routes: ...}")
        if entries is None:
            return NotifyConfig()
        channels = self._channels(entries)
        names = {c.name for c in channels}
        routes = self._routes(entries, names)
        default: tuple[str, ...] = ()
        if "default" in entries:
            default = self._channel_names(entries["default"][1], "notify.default", names)
        digest = DEFAULT_DIGEST
        if "digest" in entries:
            found = self.duration(entries["digest"][1], "notify.digest", positive=False)
            if found is not None:
                digest = found
        if channels and not routes and not default:
            self.warn(
                node.start_mark.line + 1,
                "notify: channels are defined but no route or default sends anything to them",
            )
        return NotifyConfig(tuple(channels), tuple(routes), default, digest)

    def _channels(self, entries: Entries) -> list[Channel]:
        if "channels" not in entries:
            return []
        node = entries["channels"][1]
        if not isinstance(node, yaml.MappingNode):
            got = self.describe(node)
            self.error(node, f"notify.channels must map channel names to channels, got {got}")
            return []
        channels: list[Channel] = []
        seen: dict[str, int] = {}
        for key_node, value in node.value:
            name = str(key_node.value)
            path = f"notify.channels.{name}"
            line = key_node.start_mark.line + 1
            if name in seen:
                self.error(
                    key_node, f"duplicate channel '{name}' (first given on line {seen[name]})"
                )
                continue
            seen[name] = line
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                self.error(key_node, f"{path}: a channel name is letters, digits, '.', '_', '-'")
                continue
            channel = self._channel(value, path, name)
            if channel is not None:
                channels.append(channel)
        if len(channels) > MAX_CHANNELS:
            self.error(node, f"notify.channels: at most {MAX_CHANNELS} channels")
        return channels

    def _channel(self, node: yaml.Node, path: str, name: str) -> Channel | None:
        kind_node = None
        if isinstance(node, yaml.MappingNode):
            kind_node = next(
                (v for k, v in node.value if getattr(k, "value", None) == "type"), None
            )
        if kind_node is None:
            self.error(node, f"{path}: 'type' is required: one of {', '.join(CHANNEL_TYPES)}")
            return None
        kind = self.choice(kind_node, f"{path}.type", CHANNEL_TYPES)
        line = node.start_mark.line + 1
        if kind == "webhook":
            entries = self.mapping(node, path, WEBHOOK_KEYS)
            if entries is None:
                return None
            url = self._url(entries, path)
            secret = self._env_name(entries, "secret", path, required=False)
            if url is None:
                return None
            return Channel(name, "webhook", url=url, secret_env=secret, line=line)
        if kind == "slack":
            entries = self.mapping(node, path, SLACK_KEYS)
            if entries is None:
                return None
            secret = self._env_name(entries, "url", path, required=True)
            if secret is None:
                return None
            return Channel(name, "slack", secret_env=secret, line=line)
        if kind == "email":
            entries = self.mapping(node, path, EMAIL_KEYS)
            if entries is None:
                return None
            return self._email(entries, path, name, line)
        return None

    def _url(self, entries: Entries, path: str) -> str | None:
        if "url" not in entries:
            self.error(None if not entries else next(iter(entries.values()))[0],
                       f"{path}: 'url' is required")  # fmt: skip
            return None
        node = entries["url"][1]
        url = self.text_value(node, f"{path}.url")
        if url is not None and not _URL.fullmatch(url):
            self.error(node, f"{path}.url must be an http:// or https:// URL, got {url!r}")
            return None
        return url

    def _env_name(self, entries: Entries, key: str, path: str, *, required: bool) -> str | None:
        if key not in entries:
            if required:
                first = next(iter(entries.values()))[0] if entries else None
                self.error(first, f"{path}: '{key}' is required: the name of an environment "
                           "variable that holds it")  # fmt: skip
            return None
        node = entries[key][1]
        text = self.text_value(node, f"{path}.{key}")
        if text is None:
            return None
        if not _ENV_NAME.fullmatch(text):
            self.error(
                node,
                f"{path}.{key}: name the environment variable that holds it (like "
                "ONCALL_WEBHOOK_SECRET), never the secret itself",
            )
            return None
        return text

    def _email(self, entries: Entries, path: str, name: str, line: int) -> Channel | None:
        first = next(iter(entries.values()))[0] if entries else None
        to: list[str] = []
        if "to" not in entries:
            self.error(first, f"{path}: 'to' is required: one or more addresses")
        else:
            for text, item in self.texts(entries["to"][1], f"{path}.to"):
                if _ADDRESS.fullmatch(text):
                    to.append(text)
                else:
                    self.error(item, f"{path}.to: {text!r} is not an email address")
        sender = None
        if "from" not in entries:
            self.error(first, f"{path}: 'from' is required: the sender's address")
        else:
            sender = self.text_value(entries["from"][1], f"{path}.from")
            if sender is not None and not _ADDRESS.fullmatch(sender):
                self.error(entries["from"][1], f"{path}.from: {sender!r} is not an email address")
                sender = None
        smtp = None
        if "smtp" not in entries:
            self.error(first, f"{path}: 'smtp' is required: {{host: ..., port: 587}}")
        else:
            smtp = self._smtp(entries["smtp"][1], f"{path}.smtp")
        if not to or sender is None or smtp is None:
            return None
        return Channel(name, "email", to=tuple(to), sender=sender, smtp=smtp, line=line)

    def _smtp(self, node: yaml.Node, path: str) -> SMTPServer | None:
        entries = self.mapping(node, path, SMTP_KEYS, " such as {host: smtp.example.com}")
        if entries is None:
            return None
        if "host" not in entries:
            self.error(node, f"{path}: 'host' is required")
            return None
        host = self.text_value(entries["host"][1], f"{path}.host")
        port = 587
        if "port" in entries:
            port = self.integer(entries["port"][1], f"{path}.port", 1, 65535) or 587
        starttls = True
        if "starttls" in entries:
            flag = self.boolean(entries["starttls"][1], f"{path}.starttls")
            starttls = True if flag is None else flag
        username = None
        if "username" in entries:
            username = self.text_value(entries["username"][1], f"{path}.username")
        password = self._env_name(entries, "password", path, required=False)
        if password is not None and username is None:
            self.error(node, f"{path}: a password needs a username")
        timeout = 10.0
        if "timeout" in entries:
            seconds = self.duration(entries["timeout"][1], f"{path}.timeout", positive=True)
            timeout = seconds.total_seconds() if seconds is not None else timeout
        if host is None:
            return None
        return SMTPServer(host, port, starttls, username, password, timeout)

    def _routes(self, entries: Entries, channels: set[str]) -> list[Route]:
        if "routes" not in entries:
            return []
        node = entries["routes"][1]
        if self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"notify.routes must be a list of routes, got {self.describe(node)}")
            return []
        routes: list[Route] = []
        names: dict[str, int] = {}
        for index, item in enumerate(node.value):
            path = f"notify.routes[{index}]"
            found = self.mapping(item, path, ROUTE_KEYS, " ('name: ...', 'channels: [...]')")
            if found is None:
                continue
            name = None
            if "name" not in found:
                self.error(item, f"{path}: every route needs a name")
            else:
                name = self.unique_name(
                    found["name"][1], f"{path}.name", "route", names, reserved="default"
                )
            if "channels" not in found:
                self.error(item, f"{path}: 'channels' is required")
                continue
            targets = self._channel_names(found["channels"][1], f"{path}.channels", channels)
            events: list[str] = []
            if "events" in found:
                for text, event_node in self.texts(found["events"][1], f"{path}.events"):
                    if text in EVENT_KINDS:
                        events.append(text)
                    else:
                        close = _closest(text, EVENT_KINDS)
                        self.error(
                            event_node,
                            f"{path}.events: '{text}' is not an event kind{close}; one of: "
                            + ", ".join(EVENT_KINDS),
                        )

            def globs(key: str, at: str = path, where: Entries = found) -> tuple[Glob, ...]:
                if key not in where:
                    return ()
                return tuple(Glob.of(t) for t, _ in self.texts(where[key][1], f"{at}.{key}"))

            rules: tuple[str, ...] = ()
            if "rules" in found:
                rules = tuple(t for t, _ in self.texts(found["rules"][1], f"{path}.rules"))
            if name is None:
                continue
            routes.append(
                Route(
                    name=name,
                    channels=targets,
                    events=tuple(dict.fromkeys(events)),
                    jobs=globs("jobs"),
                    accounts=globs("accounts"),
                    rules=rules,
                    line=item.start_mark.line + 1,
                )
            )
        return routes

    def _channel_names(self, node: yaml.Node, path: str, known: set[str]) -> tuple[str, ...]:
        names: list[str] = []
        for text, item in self.texts(node, path):
            if text in known:
                names.append(text)
            else:
                close = _closest(text, sorted(known))
                self.error(item, f"{path}: no channel named '{text}'{close}")
        return tuple(dict.fromkeys(names))


def _closest(text: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(text, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
