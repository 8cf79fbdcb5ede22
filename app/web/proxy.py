"""Who the client is, behind a reverse proxy: `X-Forwarded-*` believed only from proxies
the operator named (RESPAWN_TRUSTED_PROXIES), for as many hops as configured.

A request whose peer is a trusted proxy has its address, scheme and host rewritten from the
forwarded headers by Werkzeug's ProxyFix (`RESPAWN_PROXY_HOPS` proxies deep); any other
request keeps its peer address, whatever headers it carries. gunicorn is given the same
list (`forwarded_allow_ips`, app/gunicorn_conf.py), so both layers agree on whom to believe.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or addresses; ValueError names the first that is neither."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def in_networks(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class TrustedProxyFix:
    """WSGI middleware: ProxyFix for requests from trusted proxies, nothing for the rest."""

    def __init__(self, app: Any, trusted: tuple[Network, ...], hops: int) -> None:
        self.app = app
        self.trusted = trusted
        self.fixed = ProxyFix(app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if in_networks(environ.get("REMOTE_ADDR"), self.trusted):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)


def client_address() -> str:
    """The client's address as the trusted proxies report it (the peer's without them)."""
    return request.remote_addr or "unknown"
