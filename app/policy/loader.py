"""Parse and validate a policy text: every problem with its line, or a frozen ``Policy``.

The YAML is composed into nodes (which keep their line numbers) and walked by hand, so that
unknown keys, duplicate keys and wrong types are all reported with the line they are on, and
all of them in one go rather than only the first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final, TypeVar

import yaml

from app.policy.durations import format_duration
from app.policy.model import (
    ACTIONS,
    DEFAULT_GLOBAL,
    DEFAULT_PER_ACCOUNT,
    DEFAULT_PER_JOB,
    FAILED_STATUSES,
    FAILURE_CLASSES,
    HOSTS_MODES,
    NO_RULE,
    Backoff,
    Budget,
    CircuitBreaker,
    FailedShare,
    HostLimit,
    Limits,
    Policy,
    Rule,
    Schedule,
    Settings,
    SignatureBreaker,
    When,
)
from app.policy.notify import NotifyReader
from app.policy.notify_model import NotifyConfig
from app.policy.patterns import Glob, MessagePattern
from app.policy.reader import TOP, Entries
from app.policy.schedule_reader import ScheduleReader

SCHEMA_VERSION: Final = 1
MAX_RESTARTS_LIMIT: Final = 1000
MAX_BUDGET: Final = 1_000_000

TOP_KEYS: Final = (
    "version",
    "defaults",
    "rules",
    "limits",
    "circuit_breaker",
    "schedule",
    "notify",
)
SETTINGS_KEYS: Final = (
    "action",
    "hosts",
    "max_restarts",
    "backoff",
    "deadline",
    "require_unchanged",
    "ignore_blackouts",
    "notify",
)
RULE_KEYS: Final = ("name", "description", "when", *SETTINGS_KEYS)
WHEN_KEYS: Final = ("account", "job", "status", "host", "failure", "message", "failed_hosts")
FAILED_HOSTS_KEYS: Final = ("min", "max", "ratio_over")
BACKOFF_KEYS: Final = ("initial", "factor", "max", "jitter")
LIMITS_KEYS: Final = ("per_job", "per_account", "global", "per_host", "count_manual")
BUDGET_KEYS: Final = ("restarts", "window")
PER_HOST_KEYS: Final = ("failures", "window", "quarantine")
BREAKER_KEYS: Final = ("failure_ratio", "min_restarts", "window", "cool_down", "per_signature")
PER_SIGNATURE_KEYS: Final = ("executions", "jobs", "window", "cool_down")


def policy_version(text: str) -> str:
    """The short content hash that identifies a policy text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def parse_policy(text: str, source: str = "policy.yaml") -> Policy:
    """Validate ``text`` and build the policy; raise ``PolicyError`` listing every problem."""
    return _Parser(text, source).parse()


D = TypeVar("D", bound=Any)
FieldReader = Callable[[yaml.Node, str], object | None]
"""Reads one field's node (with its path for messages); None when it cannot."""


class _Parser(ScheduleReader[Policy], NotifyReader[Policy]):
    """The policy file's sections, read with `NodeReader`."""

    def document(self, root: yaml.Node | None) -> Policy:
        version = policy_version(self.text)
        if root is None:
            self.error(None, "the policy is empty: 'version: 1' is required")
            return Policy(version_hash=version, source=self.source)
        entries = self.mapping(root, TOP, TOP_KEYS, " (starting with 'version: 1')")
        if entries is None:
            return Policy(version_hash=version, source=self.source)
        if "version" not in entries:
            self.error(root, "'version: 1' is required")
        else:
            node = entries["version"][1]
            value = self.scalar(node)
            if isinstance(value, bool) or value != SCHEMA_VERSION:
                self.error(
                    node,
                    f"version: unsupported policy version {self.describe(node)}; "
                    f"this respawn understands version {SCHEMA_VERSION}",
                )
        defaults = Settings()
        if "defaults" in entries:
            node = entries["defaults"][1]
            if not self.is_null(node):
                found = self.mapping(node, "defaults", SETTINGS_KEYS)
                if found is not None:
                    defaults = self.settings(found, "defaults", Settings(), inherited=False)
        rules = self.rules(entries["rules"][1], defaults) if "rules" in entries else ()
        limits = self.limits(entries["limits"][1]) if "limits" in entries else Limits()
        breaker: CircuitBreaker | None = CircuitBreaker()
        per_signature: SignatureBreaker | None = None
        if "circuit_breaker" in entries:
            breaker, per_signature = self.breaker(entries["circuit_breaker"][1])
        schedule = Schedule()
        if "schedule" in entries:
            schedule = self.schedule(entries["schedule"][1])
        notify = NotifyConfig()
        if "notify" in entries:
            notify = self.notify(entries["notify"][1])
        return Policy(
            version_hash=version,
            defaults=defaults,
            rules=rules,
            limits=limits,
            circuit_breaker=breaker,
            signature_breaker=per_signature,
            schedule=schedule,
            notify=notify,
            schema_version=SCHEMA_VERSION,
            source=self.source,
            warnings=tuple(self.warnings),
        )

    def fields(self, base: D, found: Entries, path: str, **readers: FieldReader) -> D:
        """``base`` with each key of ``readers`` that ``found`` holds read (``path.key`` in
        messages) and set; a value that cannot be read leaves the field as it was."""
        result = base
        for key, read in readers.items():
            if key in found:
                value = read(found[key][1], f"{path}.{key}")
                if value is not None:
                    result = replace(result, **{key: value})
        return result

    def settings(self, entries: Entries, path: str, base: Settings, *, inherited: bool) -> Settings:
        """``base`` with the settings keys found in ``entries`` applied."""
        result = base
        if "action" in entries:
            action = self.choice(entries["action"][1], self.join(path, "action"), ACTIONS)
            if action == "restart":
                result = replace(result, action="restart")
            elif action == "skip":
                result = replace(result, action="skip")
        if "hosts" in entries:
            hosts = self.choice(entries["hosts"][1], self.join(path, "hosts"), HOSTS_MODES)
            if hosts == "failed":
                result = replace(result, hosts="failed")
            elif hosts == "all_failed":
                result = replace(result, hosts="all_failed")
            elif hosts == "none":
                result = replace(result, hosts="none")
        if "max_restarts" in entries:
            count = self.integer(
                entries["max_restarts"][1], self.join(path, "max_restarts"), 0, MAX_RESTARTS_LIMIT
            )
            if count is not None:
                result = replace(result, max_restarts=count)
        if "backoff" in entries:
            backoff = self.backoff(
                entries["backoff"][1], self.join(path, "backoff"), base.backoff, inherited=inherited
            )
            if backoff is not None:
                result = replace(result, backoff=backoff)
        if "deadline" in entries:
            node = entries["deadline"][1]
            if self.is_null(node):
                result = replace(result, deadline=None)
            else:
                deadline = self.duration(node, self.join(path, "deadline"), positive=True)
                if deadline is not None:
                    result = replace(result, deadline=deadline)
        if "require_unchanged" in entries:
            key = self.join(path, "require_unchanged")
            flag = self.boolean(entries["require_unchanged"][1], key)
            if flag is not None:
                result = replace(result, require_unchanged=flag)
        if "ignore_blackouts" in entries:
            key = self.join(path, "ignore_blackouts")
            flag = self.boolean(entries["ignore_blackouts"][1], key)
            if flag is not None:
                result = replace(result, ignore_blackouts=flag)
        if "notify" in entries:
            flag = self.boolean(entries["notify"][1], self.join(path, "notify"))
            if flag is not None:
                result = replace(result, notify=flag)
        return result

    def backoff(
        self, node: yaml.Node, path: str, base: Backoff, *, inherited: bool
    ) -> Backoff | None:
        entries = self.mapping(node, path, BACKOFF_KEYS, " such as {initial: 30s, factor: 2}")
        if entries is None:
            return None
        result = self.fields(
            base,
            entries,
            path,
            initial=lambda n, p: self.duration(n, p, positive=False),
            factor=lambda n, p: self.number(n, p, 1.0, 1000.0),
            max=lambda n, p: self.duration(n, p, positive=False),
            jitter=lambda n, p: self.number(n, p, 0.0, 1.0),
        )
        if result.initial > result.max:
            source = " (max comes from defaults)" if inherited and "max" not in entries else ""
            self.error(
                node,
                f"{path}: initial {format_duration(result.initial)} is longer than "
                f"max {format_duration(result.max)}{source}",
            )
            return None
        return result

    def rules(self, node: yaml.Node, defaults: Settings) -> tuple[Rule, ...]:
        if self.is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            got = self.describe(node)
            self.error(node, f"rules must be a list of rules ('- name: ...'), got {got}")
            return ()
        rules: list[Rule] = []
        names: dict[str, int] = {}
        catch_all: Rule | None = None
        for index, item in enumerate(node.value):
            path = f"rules[{index}]"
            entries = self.mapping(item, path, RULE_KEYS, " ('name: ...', 'when: ...', ...)")
            if entries is None:
                continue
            line = item.start_mark.line + 1
            name: str | None = None
            if "name" not in entries:
                self.error(item, f"{path}: every rule needs a name")
            else:
                name = self.unique_name(
                    entries["name"][1], f"{path}.name", "rule", names, reserved=NO_RULE
                )
            description = None
            if "description" in entries:
                description = self.text_value(entries["description"][1], f"{path}.description")
            when = When()
            if "when" in entries:
                when = self.when(entries["when"][1], f"{path}.when")
            settings = self.settings(entries, path, defaults, inherited=True)
            if name is None:
                continue
            rule = Rule(name=name, when=when, settings=settings, line=line, description=description)
            if catch_all is not None:
                self.warn(
                    line,
                    f"{path}: rule '{name}' is never used: rule '{catch_all.name}' "
                    f"(line {catch_all.line}) has no conditions and matches every failure first",
                )
            elif when.is_catch_all:
                catch_all = rule
            rules.append(rule)
        return tuple(rules)

    def when(self, node: yaml.Node, path: str) -> When:
        if self.is_null(node):
            return When()
        entries = self.mapping(node, path, WHEN_KEYS, " such as {job: 'db-*'}")
        if entries is None:
            return When()

        def globs(key: str) -> tuple[Glob, ...]:
            if key not in entries:
                return ()
            return tuple(Glob.of(text) for text, _ in self.texts(entries[key][1], f"{path}.{key}"))

        failures: list[str] = []
        if "failure" in entries:
            for text, item in self.texts(entries["failure"][1], f"{path}.failure"):
                if text.lower() in FAILURE_CLASSES:
                    failures.append(text.lower())
                else:
                    self.error(
                        item,
                        f"{path}.failure: '{text}' is not a failure class; "
                        f"use {', '.join(FAILURE_CLASSES)}",
                    )
        statuses: list[str] = []
        if "status" in entries:
            for text, item in self.texts(entries["status"][1], f"{path}.status"):
                if text.upper() in FAILED_STATUSES:
                    statuses.append(text.upper())
                else:
                    self.error(
                        item,
                        f"{path}.status: '{text}' is never decided; respawn decides only "
                        f"{' and '.join(FAILED_STATUSES)} executions",
                    )
        messages: list[MessagePattern] = []
        if "message" in entries:
            for text, item in self.texts(entries["message"][1], f"{path}.message"):
                try:
                    messages.append(MessagePattern.of(text))
                except re.error as exc:
                    self.error(item, f"{path}.message: invalid regular expression {text!r}: {exc}")
        share = None
        if "failed_hosts" in entries:
            share = self.failed_share(entries["failed_hosts"][1], f"{path}.failed_hosts")
        return When(
            account=globs("account"),
            job=globs("job"),
            status=tuple(dict.fromkeys(statuses)),
            host=globs("host"),
            failure=tuple(dict.fromkeys(failures)),
            message=tuple(messages),
            failed_hosts=share,
        )

    def failed_share(self, node: yaml.Node, path: str) -> FailedShare | None:
        hint = " such as {ratio_over: 0.5} or {min: 5}"
        entries = self.mapping(node, path, FAILED_HOSTS_KEYS, hint)
        if entries is None:
            return None
        if isinstance(node, yaml.MappingNode) and not node.value:
            self.error(node, f"{path} needs at least one of min, max, ratio_over{hint}")
            return None
        low = high = None
        if "min" in entries:
            low = self.integer(entries["min"][1], f"{path}.min", 0, MAX_BUDGET)
        if "max" in entries:
            high = self.integer(entries["max"][1], f"{path}.max", 0, MAX_BUDGET)
        ratio = None
        if "ratio_over" in entries:
            ratio = self.number(
                entries["ratio_over"][1], f"{path}.ratio_over", 0.0, 1.0, below_maximum=True
            )
        if low is not None and high is not None and high < low:
            self.error(entries["max"][1], f"{path}: max {high} is less than min {low}")
        return FailedShare(min=low, max=high, ratio_over=ratio)

    def limits(self, node: yaml.Node) -> Limits:
        entries = self.mapping(
            node, "limits", LIMITS_KEYS, "; to turn one limit off, set it to null (per_job: null)"
        )
        if entries is None:
            return Limits()
        count_manual = False
        if "count_manual" in entries:
            count_manual = bool(self.boolean(entries["count_manual"][1], "limits.count_manual"))
        return Limits(
            per_job=self.budget(entries, "per_job", DEFAULT_PER_JOB),
            per_account=self.budget(entries, "per_account", DEFAULT_PER_ACCOUNT),
            global_=self.budget(entries, "global", DEFAULT_GLOBAL),
            per_host=self.host_limit(entries),
            count_manual=count_manual,
        )

    def budget(self, entries: Entries, key: str, default: Budget) -> Budget | None:
        if key not in entries:
            return default
        node = entries[key][1]
        if self.is_null(node):
            return None
        path = f"limits.{key}"
        hint = " such as {restarts: 10, window: 1h}, or null"
        found = self.mapping(node, path, BUDGET_KEYS, hint)
        if found is None:
            return default
        return self.fields(
            default,
            found,
            path,
            restarts=lambda n, p: self.integer(n, p, 0, MAX_BUDGET),
            window=lambda n, p: self.duration(n, p, positive=True),
        )

    def host_limit(self, entries: Entries) -> HostLimit | None:
        default = HostLimit()
        if "per_host" not in entries:
            return default
        node = entries["per_host"][1]
        if self.is_null(node):
            return None
        path = "limits.per_host"
        hint = " such as {failures: 5, window: 24h, quarantine: 6h}, or null"
        found = self.mapping(node, path, PER_HOST_KEYS, hint)
        if found is None:
            return default
        return self.fields(
            default,
            found,
            path,
            failures=lambda n, p: self.integer(n, p, 1, MAX_BUDGET),
            window=lambda n, p: self.duration(n, p, positive=True),
            quarantine=lambda n, p: self.duration(n, p, positive=True),
        )

    def breaker(self, node: yaml.Node) -> tuple[CircuitBreaker | None, SignatureBreaker | None]:
        """The fleet breaker and the per-signature one; ``circuit_breaker: null`` turns off
        both."""
        if self.is_null(node):
            return None, None
        path = "circuit_breaker"
        default = CircuitBreaker()
        found = self.mapping(node, path, BREAKER_KEYS, " such as {failure_ratio: 0.5}, or null")
        if found is None:
            return default, None
        per_signature = None
        if "per_signature" in found:
            per_signature = self.signature_breaker(
                found["per_signature"][1], f"{path}.per_signature"
            )
        result = self.fields(
            default,
            found,
            path,
            failure_ratio=lambda n, p: self.number(n, p, 0.0, 1.0, above_minimum=True),
            min_restarts=lambda n, p: self.integer(n, p, 1, MAX_BUDGET),
            window=lambda n, p: self.duration(n, p, positive=True),
            cool_down=lambda n, p: self.duration(n, p, positive=False),
        )
        return result, per_signature

    def signature_breaker(self, node: yaml.Node, path: str) -> SignatureBreaker | None:
        if self.is_null(node):
            return None
        default = SignatureBreaker()
        hint = " such as {executions: 5, jobs: 3, window: 10m, cool_down: 15m}, or null"
        found = self.mapping(node, path, PER_SIGNATURE_KEYS, hint)
        if found is None:
            return default
        result = self.fields(
            default,
            found,
            path,
            executions=lambda n, p: self.integer(n, p, 1, MAX_BUDGET),
            jobs=lambda n, p: self.integer(n, p, 1, MAX_BUDGET),
            window=lambda n, p: self.duration(n, p, positive=True),
            cool_down=lambda n, p: self.duration(n, p, positive=False),
        )
        if result.jobs > result.executions:
            self.warn(
                node.start_mark.line + 1,
                f"{path}: jobs {result.jobs} is more than executions {result.executions}; each "
                f"execution belongs to one job, so it takes {result.jobs} executions to open",
            )
        return result
