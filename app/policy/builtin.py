"""The built-in policy: what respawn does when no policy file exists."""

from __future__ import annotations

from typing import Final

BUILTIN_SOURCE: Final = "builtin"

DEFAULT_POLICY_TEXT: Final = """\
# respawn built-in policy: in force when the policy file does not exist.
# It spells out the built-in defaults and has no rules: every failed execution is
# restarted against its failed hosts, at most 3 times, with exponential backoff.
# See docs/policy.md for every key.
version: 1

defaults:
  action: restart
  hosts: failed
  max_restarts: 3
  backoff: {initial: 30s, factor: 2, max: 10m, jitter: 0.1}
  deadline: 6h
  require_unchanged: false
  ignore_blackouts: false

rules: []

limits:
  per_job: {restarts: 10, window: 1h}
  per_account: {restarts: 50, window: 1h}
  global: {restarts: 200, window: 1h}
  per_host: {failures: 5, window: 24h, quarantine: 6h}
  count_manual: false

circuit_breaker:
  failure_ratio: 0.5
  min_restarts: 10
  window: 15m
  cool_down: 10m
  per_signature: null        # the error-signature breaker is off

schedule:
  blackouts: []
"""
