"""SSH keys for restarts, read from the key file at send time and never kept.

`RESPAWN_SSH_KEYS_FILE` is YAML mapping host globs to private key files, first match wins:

    "web*": /etc/respawn/keys/web.pem
    "db-??": keys/db.pem        # relative to the YAML file's folder
    "*": /etc/respawn/keys/default.pem

A key matched by `*` is also sent as the body's top-level `sshPrivateKey` (the one used for
hosts without their own). Keys are base64-encoded into the restart body, as the Runner wants.
"""

from __future__ import annotations

import base64
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app.redact import KNOWN_SECRETS
from app.runner.resources import RestartHost


class KeyFileError(RuntimeError):
    """The key file or a key it names cannot be used; the message names no key material."""


@dataclass(frozen=True)
class RestartKeys:
    hosts: tuple[RestartHost, ...]
    default_key: str | None = field(default=None, repr=False)


def _load_map(path: Path) -> list[tuple[str, Path]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyFileError(f"SSH key map {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise KeyFileError(f"SSH key map {path}: not valid YAML") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise KeyFileError(f"SSH key map {path}: expected a mapping of host glob to key file")
    return [
        (glob, (path.parent / file) if not Path(file).is_absolute() else Path(file))
        for glob, file in data.items()
    ]


def _read_key(file: Path) -> str:
    try:
        material = file.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"SSH key file {file}: {exc.strerror}") from None
    encoded = base64.b64encode(material).decode("ascii")
    # The key as sent (base64) and as written: an echo of either is scrubbed everywhere.
    KNOWN_SECRETS.add(encoded, material.decode("utf-8", errors="replace"))
    return encoded


def resolve_keys(keys_file: str | None, hosts: Sequence[str]) -> RestartKeys:
    """The restart body's hosts with their keys, and the default key, from the key map."""
    if not keys_file:
        return RestartKeys(tuple(RestartHost(h) for h in hosts))
    mapping = _load_map(Path(keys_file))
    cache: dict[Path, str] = {}

    def key_for(file: Path) -> str:
        if file not in cache:
            cache[file] = _read_key(file)
        return cache[file]

    default_key = None
    for glob, file in mapping:
        if glob == "*":
            default_key = key_for(file)
            break
    entries = []
    for host in hosts:
        match = next((file for glob, file in mapping if fnmatch.fnmatchcase(host, glob)), None)
        own = key_for(match) if match is not None else None
        entries.append(RestartHost(host, own if own != default_key else None))
    return RestartKeys(tuple(entries), default_key)
