"""The policy's `notify:` section: what it reads, every mistake reported at its file:line like
the rest of the file, and where each event goes (routes, the default route, mutes). Pure."""

from __future__ import annotations

import datetime as dt
from textwrap import dedent

import pytest

from app.policy import PolicyError, parse_policy
from app.policy.notify_model import (
    Destination,
    EventFacts,
    NotifyConfig,
    SMTPServer,
    destinations,
)

VALID = """\
version: 1
rules:
  - {name: shop, when: {job: "shop-*"}, action: skip, notify: true}
notify:
  digest: 2m
  channels:
    oncall: {type: webhook, url: "https://hooks.example.com/respawn", secret: ONCALL_SECRET}
    open-hook: {type: webhook, url: "http://10.0.0.5:8080/in"}
    chat: {type: slack, url: SLACK_URL}
    mail:
      type: email
      to: [ops@example.com]
      from: respawn@example.com
      smtp: {host: smtp.example.com, port: 2525, starttls: no, username: respawn,
             password: SMTP_PASSWORD, timeout: 20s}
    relay:
      type: email
      to: ops@example.com
      from: respawn@example.com
      smtp: {host: relay.internal}
  routes:
    - name: db
      events: [gave_up, restart_failed, gave_up]
      jobs: ["db-*"]
      channels: [oncall, mail, oncall]
    - {name: acme, accounts: ["ACME*"], channels: [chat]}
    - {name: shop, rules: [shop], channels: [relay]}
    - {name: fleet, events: [breaker_opened, breaker_closed], channels: [oncall, open-hook]}
  default: [chat]
"""


def test_a_notify_section_is_read_into_channels_routes_and_a_default() -> None:
    config = parse_policy(VALID, "policy.yaml").notify

    assert config.enabled and config.digest == dt.timedelta(minutes=2)
    oncall = config.channel("oncall")
    assert oncall is not None
    assert (oncall.type, oncall.url, oncall.secret_env, oncall.line) == (
        "webhook",
        "https://hooks.example.com/respawn",
        "ONCALL_SECRET",
        7,
    )
    open_hook = config.channel("open-hook")
    assert open_hook is not None and open_hook.secret_env is None
    chat = config.channel("chat")
    assert chat is not None and (chat.type, chat.url, chat.secret_env) == (
        "slack",
        None,
        "SLACK_URL",
    )
    mail = config.channel("mail")
    assert mail is not None and mail.to == ("ops@example.com",)
    assert mail.smtp == SMTPServer(
        "smtp.example.com", 2525, False, "respawn", "SMTP_PASSWORD", 20.0
    )
    relay = config.channel("relay")
    assert relay is not None and relay.smtp == SMTPServer("relay.internal")
    assert config.channel("nowhere") is None
    db, acme, shop, fleet = config.routes
    assert (db.name, db.events, db.channels, db.line) == (
        "db",
        ("gave_up", "restart_failed"),
        ("oncall", "mail"),
        22,
    )
    assert [g.pattern for g in db.jobs] == ["db-*"]
    assert [g.pattern for g in acme.accounts] == ["ACME*"] and shop.rules == ("shop",)
    assert fleet.channels == ("oncall", "open-hook")
    assert config.default == ("chat",)


@pytest.mark.parametrize(
    "section",
    ["", "notify:\n", "notify: {}\n", "notify: {channels: {}}\n"],
    ids=["absent", "null", "empty", "no-channels"],
)
def test_without_channels_nothing_is_told(section: str) -> None:
    config = parse_policy("version: 1\n" + section).notify

    assert not config.enabled
    assert config == NotifyConfig()


def test_channels_nobody_sends_to_are_a_warning() -> None:
    text = "version: 1\nnotify:\n  channels:\n    chat: {type: slack, url: SLACK_URL}\n"

    warnings = parse_policy(text, "policy.yaml").warnings

    assert [str(w) for w in warnings] == [
        "policy.yaml:3: notify: channels are defined but no route or default sends anything to them"
    ]


CH = "  channels:\n    chat: {type: slack, url: SLACK_URL}\n"
HOOK = "  channels:\n    hook: {type: webhook, url: 'https://h.example.com/x'}\n"
MAIL = "  channels:\n    mail:\n      type: email\n"


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("notify: [oncall]\n", 2, "notify must be a mapping of keys to values"),
        (
            "notify:\n  chanels: {}\n",
            3,
            "unknown key 'chanels' in notify (did you mean 'channels'?)",
        ),
        ("notify:\n  channels: [a, b]\n", 3, "notify.channels must map channel names to channels"),
        (
            "notify:\n  channels:\n    hook: {url: 'https://h.example.com'}\n",
            4,
            "notify.channels.hook: 'type' is required: one of webhook, slack, email",
        ),
        ("notify:\n  channels:\n    hook: {type: pager}\n", 4, "notify.channels.hook.type"),
        (
            "notify:\n  channels:\n    hook: {type: webhook}\n",
            4,
            "notify.channels.hook: 'url' is required",
        ),
        (
            "notify:\n  channels:\n    hook: {type: webhook, url: 'ftp://h.example.com'}\n",
            4,
            "notify.channels.hook.url must be an http:// or https:// URL, got 'ftp://h.example.com'",
        ),
        (
            "notify:\n  channels:\n    hook: {type: webhook, url: 'https://h.example.com',"
            " secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n",
            4,
            "notify.channels.hook.secret: name the environment variable that holds it (like "
            "ONCALL_WEBHOOK_SECRET), never the secret itself",
        ),
        (
            "notify:\n  channels:\n    chat: {type: slack}\n",
            4,
            "notify.channels.chat: 'url' is required: the name of an environment variable",
        ),
        (
            "notify:\n  channels:\n    chat: {type: slack, url: 'https://hooks.slack.com/T/B/x'}\n",
            4,
            "notify.channels.chat.url: name the environment variable that holds it",
        ),
        (
            "notify:\n  channels:\n    chat: {type: slack, url: X, channel: ops}\n",
            4,
            "unknown key 'channel' in notify.channels.chat",
        ),
        (
            "notify:\n  channels:\n    'no spaces': {type: slack, url: X}\n",
            4,
            "notify.channels.no spaces: a channel name is letters, digits, '.', '_', '-'",
        ),
        (
            "notify:\n" + CH + "    chat: {type: slack, url: Y}\n",
            5,
            "duplicate channel 'chat' (first given on line 4)",
        ),
        (
            "notify:\n" + MAIL + "      from: r@example.com\n      smtp: {host: h}\n",
            5,
            "notify.channels.mail: 'to' is required: one or more addresses",
        ),
        (
            "notify:\n"
            + MAIL
            + "      to: [ops]\n      from: r@example.com\n      smtp: {host: h}\n",
            6,
            "notify.channels.mail.to: 'ops' is not an email address",
        ),
        (
            "notify:\n" + MAIL + "      to: o@example.com\n      smtp: {host: h}\n",
            5,
            "notify.channels.mail: 'from' is required: the sender's address",
        ),
        (
            "notify:\n"
            + MAIL
            + "      to: o@example.com\n      from: respawn\n      smtp: {host: h}\n",
            7,
            "notify.channels.mail.from: 'respawn' is not an email address",
        ),
        (
            "notify:\n" + MAIL + "      to: o@example.com\n      from: r@example.com\n",
            5,
            "notify.channels.mail: 'smtp' is required: {host: ..., port: 587}",
        ),
        (
            "notify:\n" + MAIL + "      to: o@example.com\n      from: r@example.com\n"
            "      smtp: {port: 25}\n",
            8,
            "notify.channels.mail.smtp: 'host' is required",
        ),
        (
            "notify:\n" + MAIL + "      to: o@example.com\n      from: r@example.com\n"
            "      smtp: {host: h, port: 70000}\n",
            8,
            "notify.channels.mail.smtp.port",
        ),
        (
            "notify:\n" + MAIL + "      to: o@example.com\n      from: r@example.com\n"
            "      smtp: {host: h, password: SMTP_PASSWORD}\n",
            8,
            "notify.channels.mail.smtp: a password needs a username",
        ),
        (
            "notify:\n" + MAIL + "      to: o@example.com\n      from: r@example.com\n"
            "      smtp: {host: h, username: u, password: 'hunter2!'}\n",
            8,
            "notify.channels.mail.smtp.password: name the environment variable that holds it",
        ),
        (
            "notify:\n" + MAIL + "      to: o@example.com\n      from: r@example.com\n"
            "      smtp: {host: h, tls: true}\n",
            8,
            "unknown key 'tls' in notify.channels.mail.smtp",
        ),
        ("notify:\n" + CH + "  routes: {name: r}\n", 5, "notify.routes must be a list of routes"),
        (
            "notify:\n" + CH + "  routes:\n    - {channels: [chat]}\n",
            6,
            "notify.routes[0]: every route needs a name",
        ),
        (
            "notify:\n" + CH + "  routes:\n    - {name: r}\n",
            6,
            "notify.routes[0]: 'channels' is required",
        ),
        (
            "notify:\n" + CH + "  routes:\n    - {name: r, channels: [chta]}\n",
            6,
            "notify.routes[0].channels: no channel named 'chta' (did you mean 'chat'?)",
        ),
        (
            "notify:\n" + CH + "  routes:\n    - {name: r, events: [gaveup], channels: [chat]}\n",
            6,
            "notify.routes[0].events: 'gaveup' is not an event kind (did you mean 'gave_up'?);"
            " one of: restart_sent, restart_failed, gave_up",
        ),
        (
            "notify:\n" + CH + "  routes:\n    - {name: r, channels: [chat], hosts: [web1]}\n",
            6,
            "unknown key 'hosts' in notify.routes[0]",
        ),
        ("notify:\n" + CH + "  routes:\n    - {name: default, channels: [chat]}\n", 6, "default"),
        (
            "notify:\n" + CH + "  routes:\n    - {name: r, channels: [chat]}\n"
            "    - {name: r, channels: [chat]}\n",
            7,
            "'r'",
        ),
        (
            "notify:\n" + CH + "  default: [chta]\n",
            5,
            "notify.default: no channel named 'chta' (did you mean 'chat'?)",
        ),
        ("notify:\n" + CH + "  default: [chat]\n  digest: soon\n", 6, "notify.digest"),
        ("notify:\n" + HOOK + "  default: [hook]\n  digest: -5m\n", 6, "notify.digest"),
    ],
)
def test_mistakes_are_reported_at_their_line(section: str, line: int, message: str) -> None:
    text = "version: 1\n" + section
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.yaml")

    found = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"policy.yaml:{line}: ") and message in p for p in found), found


def test_too_many_channels_are_refused() -> None:
    channels = "".join(f"    c{n}: {{type: slack, url: URL_{n}}}\n" for n in range(51))
    text = "version: 1\nnotify:\n  channels:\n" + channels + "  default: [c0]\n"

    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.yaml")

    assert [str(p) for p in caught.value.problems] == [
        "policy.yaml:4: notify.channels: at most 50 channels"
    ]


def test_every_mistake_of_a_file_is_reported_at_once() -> None:
    text = dedent(
        """\
        version: 1
        notify:
          channels:
            hook: {type: webhook, url: 'https://h.example.com', secret: 'not a name'}
            chat: {type: slack, url: SLACK_URL}
          routes:
            - {name: r, events: [paused, nope], channels: [chat, hook2]}
          default: [mail]
        """
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "etc/policy.yaml")

    assert [(p.source, p.line) for p in caught.value.problems] == [
        ("etc/policy.yaml", 4),
        ("etc/policy.yaml", 7),
        ("etc/policy.yaml", 7),
        ("etc/policy.yaml", 8),
    ]


# --- routing ----------------------------------------------------------------------------------

CONFIG = parse_policy(VALID).notify


def sent(*pairs: str) -> list[Destination]:
    return [Destination(*pair.split(":")) for pair in pairs]


@pytest.mark.parametrize(
    ("facts", "muted", "expected"),
    [
        # by kind and job glob: the db route, each channel once
        (
            EventFacts("gave_up", ("db-migrate", ""), "X", "defaults"),
            (),
            sent("db:oncall", "db:mail"),
        ),
        # the job glob matches the description too
        (EventFacts("gave_up", ("j-17", "db-backup"), "X", None), (), sent("db:oncall", "db:mail")),
        # another kind of event of that job: no route takes it, the default does
        (EventFacts("restart_sent", ("db-migrate", ""), "X", "defaults"), (), sent("default:chat")),
        # by account
        (EventFacts("paused", ("j-1", ""), "ACME-EU", None), (), sent("acme:chat")),
        # every route that takes it, a channel once (the first route naming it)
        (
            EventFacts("gave_up", ("db-x", ""), "ACME", "defaults"),
            (),
            sent("db:oncall", "db:mail", "acme:chat"),
        ),
        # by rule
        (EventFacts("gave_up", ("shop-1", ""), "X", "shop"), (), sent("shop:relay")),
        # events without a job or account
        (EventFacts("breaker_opened"), (), sent("fleet:oncall", "fleet:open-hook")),
        (EventFacts("policy_refused"), (), sent("default:chat")),
        # a muted route sends nothing and still keeps the event from the default
        (EventFacts("gave_up", ("db-x", ""), "X", None), ("db",), []),
        (EventFacts("gave_up", ("db-x", ""), "ACME", None), ("db",), sent("acme:chat")),
        (EventFacts("policy_refused"), ("default",), []),
        (EventFacts("breaker_opened"), ("default",), sent("fleet:oncall", "fleet:open-hook")),
    ],
)
def test_an_event_goes_where_its_routes_say(
    facts: EventFacts, muted: tuple[str, ...], expected: list[Destination]
) -> None:
    assert destinations(CONFIG, facts, frozenset(muted)) == expected


def test_no_channels_means_no_destinations() -> None:
    assert destinations(NotifyConfig(), EventFacts("gave_up", ("db-1", ""))) == []
