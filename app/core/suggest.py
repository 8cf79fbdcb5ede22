"""Suggested policy rules from restart insights, each with its evidence (docs/policy.md,
"Suggestions"). Pure: counters and the policy in, suggestions and YAML out.

Three kinds, at most one per signature, never on fewer than `min_samples` finished restarts:

- `backoff` (looked at first): first restarts sent after a longer wait succeed clearly more
  often than quick ones (the two intervals do not overlap); the wait that separates them best
  (the widest gap between the intervals) becomes `backoff.initial`;
- `skip`: restarts of the signature almost never help (the upper end of the Wilson interval
  of their success rate is below `SKIP_CEILING`);
- `max_restarts`: the last attempt the record reached still succeeds often (the lower end of
  its interval is at least `RAISE_FLOOR`, and above the first attempt's interval), and that
  attempt is the rule's `max_restarts`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from app.core.insights_read import SignatureStats, Tally
from app.policy import Policy, format_duration

Z = 1.96
"""95% two-sided."""
SKIP_CEILING = 0.3
RAISE_FLOOR = 0.3
LATE_FLOOR = 0.3
MAX_SUGGESTED_RESTARTS = 10
MESSAGE_CHARS = 300
"""The normalised text a suggested rule's message pattern follows, at most."""
_PLACEHOLDER = re.compile(r"<(?:n|ip|host|hex|uuid|path)>")


def wilson(successes: int, samples: int) -> tuple[float, float]:
    """The Wilson score interval (95%) of a success rate."""
    if samples <= 0:
        return (0.0, 1.0)
    p = successes / samples
    denominator = 1 + Z * Z / samples
    centre = (p + Z * Z / (2 * samples)) / denominator
    margin = Z * math.sqrt(p * (1 - p) / samples + Z * Z / (4 * samples * samples)) / denominator
    return (max(0.0, centre - margin), min(1.0, centre + margin))


@dataclass(frozen=True)
class Suggestion:
    kind: str
    """skip, max_restarts or backoff."""
    signature: str
    failure_class: str
    text: str
    rule: dict[str, Any]
    evidence: str
    samples: int
    successes: int
    interval: tuple[float, float]

    @property
    def name(self) -> str:
        return str(self.rule["name"])


def message_pattern(text: str) -> str:
    """A regex that finds messages with this normalised text: its literal parts in order,
    any text where a placeholder was, any whitespace where a space was."""
    cut = text[:MESSAGE_CHARS]
    if len(text) > MESSAGE_CHARS and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    parts = []
    for literal in _PLACEHOLDER.split(cut):
        parts.append(r"\s+".join(re.escape(word) for word in literal.split(" ")))
    return ".+?".join(parts)


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _evidence(successes: int, samples: int, what: str, text: str) -> str:
    low, high = wilson(successes, samples)
    return (
        f"{successes} of {samples} {what} of `{text}` succeeded "
        f"({_percent(successes / samples)}; 95% Wilson interval {_percent(low)}-{_percent(high)})"
    )


def _when(stats: SignatureStats) -> dict[str, Any]:
    return {"failure": [stats.failure_class], "message": message_pattern(stats.text)}


def _rule_settings(policy: Policy, rule: str | None) -> tuple[int, dt.timedelta]:
    found = policy.rule(rule) if rule else None
    settings = found.settings if found is not None else policy.defaults
    return settings.max_restarts, settings.backoff.max


def suggest_for(stats: SignatureStats, policy: Policy, min_samples: int) -> Suggestion | None:
    """The one suggestion the counters support for this signature, if any."""
    if not stats.text:
        return None
    # A backoff first: when late restarts succeed, the overall rate understates them.
    found = _backoff(stats, policy, min_samples) or _skip(stats, min_samples)
    return found or _raise(stats, policy, min_samples)


def _make(
    stats: SignatureStats, kind: str, settings: dict[str, Any], tally: Tally, evidence: str
) -> Suggestion:
    rule = {
        "name": f"suggested-{kind.replace('_', '-')}-{stats.key[:8]}",
        "description": f"suggested by respawn policy suggest ({kind})",
        "when": _when(stats),
        **settings,
    }
    return Suggestion(
        kind=kind,
        signature=stats.key,
        failure_class=stats.failure_class,
        text=stats.text,
        rule=rule,
        evidence=evidence,
        samples=tally.settled,
        successes=tally.recovered,
        interval=wilson(tally.recovered, tally.settled),
    )


def _skip(stats: SignatureStats, min_samples: int) -> Suggestion | None:
    total = stats.total
    if total.settled < min_samples or wilson(total.recovered, total.settled)[1] >= SKIP_CEILING:
        return None
    evidence = _evidence(total.recovered, total.settled, "restarts", _label(stats))
    return _make(stats, "skip", {"action": "skip"}, total, evidence)


def _raise(stats: SignatureStats, policy: Policy, min_samples: int) -> Suggestion | None:
    if not stats.by_attempt:
        return None
    last = max(stats.by_attempt)
    tally = stats.by_attempt[last]
    current, _ = _rule_settings(policy, stats.rule)
    if last < 2 or last < current or tally.settled < min_samples:
        return None
    low = wilson(tally.recovered, tally.settled)[0]
    first = stats.by_attempt.get(1, Tally())
    if low < RAISE_FLOOR or low <= wilson(first.recovered, first.settled)[1]:
        return None
    proposed = min(current + 2, MAX_SUGGESTED_RESTARTS)
    if proposed <= current:
        return None
    evidence = _evidence(
        tally.recovered, tally.settled, f"attempt-{last} restarts", _label(stats)
    ) + (f"; max_restarts is {current}")
    return _make(stats, "max_restarts", {"max_restarts": proposed}, tally, evidence)


def _backoff(stats: SignatureStats, policy: Policy, min_samples: int) -> Suggestion | None:
    buckets = sorted(stats.by_wait)
    best: tuple[float, int, Tally, Tally] | None = None
    for split in buckets[1:]:
        quick, late = Tally(), Tally()
        for bucket in buckets:
            side = quick if bucket < split else late
            side.settled += stats.by_wait[bucket].settled
            side.recovered += stats.by_wait[bucket].recovered
        if quick.settled < min_samples or late.settled < min_samples:
            continue
        quick_high = wilson(quick.recovered, quick.settled)[1]
        late_low = wilson(late.recovered, late.settled)[0]
        if late_low <= quick_high or late_low < LATE_FLOOR:
            continue
        # The split that separates best: later splits mix successes into the quick side.
        if best is None or late_low - quick_high > best[0]:
            best = (late_low - quick_high, split, quick, late)
    if best is None:
        return None
    _, split, quick, late = best
    initial = dt.timedelta(seconds=split)
    _, current_max = _rule_settings(policy, stats.rule)
    wait = format_duration(initial)
    late_low, late_high = wilson(late.recovered, late.settled)
    quick_low, quick_high = wilson(quick.recovered, quick.settled)
    evidence = (
        f"{late.recovered} of {late.settled} first restarts of `{_label(stats)}` sent {wait} "
        f"or more after the failure succeeded ({_percent(late_low)}-{_percent(late_high)}), "
        f"against {quick.recovered} of {quick.settled} sent sooner "
        f"({_percent(quick_low)}-{_percent(quick_high)}; 95% Wilson intervals)"
    )
    backoff = {"initial": _duration(initial), "max": _duration(max(initial * 4, current_max))}
    return _make(stats, "backoff", {"backoff": backoff}, late, evidence)


def _duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _label(stats: SignatureStats) -> str:
    return f"{stats.failure_class}: {stats.text}"


def suggest(
    signatures: Iterable[SignatureStats], policy: Policy, min_samples: int
) -> list[Suggestion]:
    return [s for s in (suggest_for(x, policy, min_samples) for x in signatures) if s]


# --- YAML -----------------------------------------------------------------------------------------


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's emitter where PyYAML was built with it (its wheels are): the same YAML, faster."""


def snippet(suggestions: Sequence[Suggestion]) -> str:
    """The rules as YAML to paste at the top of `rules:`, each after its evidence."""
    lines = ["rules:"]
    for item in suggestions:
        lines.append(f"  # {item.kind}: {item.evidence}")
        dumped = yaml.dump(
            [item.rule], Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=1000
        )
        lines.extend(f"  {line}" for line in dumped.splitlines())
    return "\n".join(lines) + "\n"


def candidate_text(base: str, suggestions: Sequence[Suggestion]) -> str:
    """The policy `base` (YAML text) with the suggested rules first."""
    document = yaml.safe_load(base) or {}
    if not isinstance(document, dict):
        document = {"version": 1}
    document["rules"] = [s.rule for s in suggestions] + list(document.get("rules") or [])
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
