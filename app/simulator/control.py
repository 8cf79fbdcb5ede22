"""A small client of the simulator's `/_sim/` control API, for tests and the demo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests


class SimulatorControlError(RuntimeError):
    """A control call failed; the message holds the simulator's answer."""


class SimulatorControl:
    """Drives a running simulator over HTTP (use `Simulator` directly when in-process)."""

    def __init__(self, session: requests.Session, base_url: str, timeout: float = 10.0) -> None:
        self._session = session
        self._base = base_url.rstrip("/") + "/_sim"
        self._timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        response = self._session.request(
            method,
            self._base + path,
            json=body,
            timeout=(3.05, timeout or self._timeout),
        )
        if response.status_code >= 400:
            raise SimulatorControlError(
                f"{method} /_sim{path}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json()

    def faults(self, **changes: Any) -> dict[str, Any]:
        """Change fault switches (see docs/simulator.md); no arguments just reads them."""
        if changes:
            result: dict[str, Any] = self._call("POST", "/faults", changes)
        else:
            result = self._call("GET", "/faults")
        return result

    def clear_faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", "/faults")
        return result

    def variants(self, **changes: Any) -> dict[str, Any]:
        """Change variant switches (`execution_get_404`, `lists_oldest_first`, `expire_runs`,
        `timestamps_in_seconds`, `status_page`; docs/simulator.md); no arguments reads them."""
        if changes:
            result: dict[str, Any] = self._call("POST", "/variants", changes)
        else:
            result = self._call("GET", "/variants")
        return result

    def clear_variants(self) -> dict[str, Any]:
        """Every variant switch off."""
        result: dict[str, Any] = self._call("DELETE", "/variants")
        return result

    def settings(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST" if changes else "GET", "/settings", changes)
        return result

    def expire_tokens(self) -> int:
        return int(self._call("POST", "/tokens/expire")["revoked"])

    def scripts(self, rules: Mapping[str, Any], replace: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "POST", "/scripts", {"hosts": dict(rules), "replace": replace}
        )
        return result

    def fleet(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/fleet", dict(spec))
        return result

    def advance(self, ticks: int = 1) -> int:
        return int(self._call("POST", "/advance", {"ticks": ticks})["active"])

    def advance_until_idle(self, max_ticks: int = 10_000) -> int:
        return int(
            self._call("POST", "/advance", {"until_idle": True, "max_ticks": max_ticks})["ticks"]
        )

    def held(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/held")
        return result

    def wait_held(self, count: int = 1, timeout: float = 5.0) -> bool:
        body = {"count": count, "timeout": timeout}
        return bool(self._call("POST", "/held/wait", body, timeout=timeout + 5)["reached"])

    def release(
        self, execution_id: str | None = None, action: str = "proceed", stage: str | None = None
    ) -> int:
        body = {"execution_id": execution_id, "action": action, "stage": stage}
        return int(self._call("POST", "/release", body)["released"])

    def calls(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/calls")
        return result

    def deliveries(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/deliveries")
        return result

    def wait_deliveries(self, timeout: float = 5.0) -> bool:
        body = {"timeout": timeout}
        return bool(self._call("POST", "/deliveries/wait", body, timeout=timeout + 5)["idle"])

    def executions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/executions")
        return result

    def execution(self, execution_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/executions/{execution_id}")
        return result

    def reset(self) -> None:
        self._call("POST", "/reset")
