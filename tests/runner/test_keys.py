"""The SSH key map: host globs to key files, read at send time; every error names no key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from app.runner.keys import KeyFileError, resolve_keys
from app.runner.resources import RestartHost

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nKEYMATERIAL{n}\n-----END OPENSSH PRIVATE KEY-----\n"


def key_file(folder: Path, name: str, n: int) -> Path:
    path = folder / name
    path.write_text(PEM.format(n=n))
    return path


def encoded(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_no_key_map_sends_hosts_without_keys() -> None:
    keys = resolve_keys(None, ["web1", "db1"])

    assert keys.hosts == (RestartHost("web1"), RestartHost("db1"))
    assert keys.default_key is None


def test_first_matching_glob_wins_and_the_star_key_is_the_default(tmp_path: Path) -> None:
    web = key_file(tmp_path, "web.pem", 1)
    default = key_file(tmp_path, "default.pem", 2)
    (tmp_path / "keys").mkdir()
    db = key_file(tmp_path / "keys", "db.pem", 3)
    mapping = tmp_path / "keys.yaml"
    mapping.write_text(f'"web*": {web}\n"db-??": keys/db.pem\n"*": default.pem\n')

    keys = resolve_keys(str(mapping), ["web1", "db-01", "cache1"])

    assert keys.default_key == encoded(default)
    by_host = {h.id: h for h in keys.hosts}
    assert by_host["web1"] == RestartHost("web1", encoded(web))
    assert by_host["db-01"] == RestartHost("db-01", encoded(db))
    # A host the default covers carries no key of its own: the body's top-level key serves.
    assert by_host["cache1"] == RestartHost("cache1", None)


def test_an_empty_key_map_sends_no_keys(tmp_path: Path) -> None:
    mapping = tmp_path / "keys.yaml"
    mapping.write_text("")

    keys = resolve_keys(str(mapping), ["web1"])

    assert keys.hosts == (RestartHost("web1"),) and keys.default_key is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        ("web*: [unclosed", "not valid YAML"),
        ("- a list\n- of things\n", "expected a mapping of host glob to key file"),
        ('"web*": 42\n', "expected a mapping of host glob to key file"),
        ('"web*": missing.pem\n', "SSH key file"),
    ],
    ids=["map-missing", "bad-yaml", "not-a-mapping", "not-a-path", "key-missing"],
)
def test_key_map_errors_name_the_problem_and_no_key(
    tmp_path: Path, content: str | None, message: str
) -> None:
    planted = key_file(tmp_path, "other.pem", 9)
    mapping = tmp_path / "keys.yaml"
    if content is not None:
        mapping.write_text(content + f"# {planted}\n")

    with pytest.raises(KeyFileError) as raised:
        resolve_keys(str(mapping), ["web1"])

    assert message in str(raised.value)
    assert "KEYMATERIAL" not in str(raised.value)
