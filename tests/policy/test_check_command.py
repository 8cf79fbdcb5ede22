"""`respawn policy check [FILE]`, run as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.policy import check_command
from app.policy import parse_policy

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(check_command, args, env=env)
    return result.exit_code, result.stdout, result.stderr


def test_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:\n  - name: a\n    when: {job: x}\n  - name: b\n")
    code, out, err = run([str(path)])
    version = parse_policy(path.read_text()).version_hash
    assert (code, out, err) == (0, f"{path}: OK (version {version}, 2 rules)\n", "")


def test_one_rule_is_singular(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrules: [{name: a}]\n")
    assert run([str(path)])[1].endswith(", 1 rule)\n")


def test_shipped_policy_is_valid() -> None:
    code, out, _ = run([str(REPO / "policy.yaml")])
    assert code == 0
    assert "OK (version " in out and "6 rules" in out


def test_every_problem_is_printed_to_stderr(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\n"
        "defaults:\n"
        "  max_restart: 3\n"
        "rules:\n"
        "  - name: a\n"
        "    when: {message: '(unclosed'}\n"
        "circuit_breaker: {failure_ratio: 2}\n"
    )
    code, out, err = run([str(path)])
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [f"{path}:3", f"{path}:6", f"{path}:7"]
    assert lines[0].startswith(f"{path}:3: unknown key 'max_restart' in defaults")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nrules: [\n")
    code, _, err = run([str(path)])
    assert code == 1
    assert err.startswith(f"{path}:3: not valid YAML")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    code, _, err = run([str(path)])
    assert (code, err) == (1, f"{path}:2: not UTF-8 text: the policy file must be UTF-8\n")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, _, err = run([str(path)])
    assert code == 1
    assert err == f"{path}:1: no such file (respawn would use the built-in policy)\n"


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrules:\n  - name: all\n  - name: never\n")
    code, out, err = run([str(path)])
    assert code == 0 and "OK" in out
    assert err.startswith(f"{path}:4: rules[1]: rule 'never' is never used") and "(warning)" in err


def test_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("version: 1\n")
    code, out, _ = run([], env={"RESPAWN_POLICY_FILE": str(path)})
    assert code == 0 and out.startswith(f"{path}: OK")


def test_default_file_is_policy_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESPAWN_POLICY_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text("version: 1\n")
    code, out, _ = run([])
    assert code == 0 and out.startswith("policy.yaml: OK")


def test_argument_beats_the_environment(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\n")
    code, out, _ = run([str(good)], env={"RESPAWN_POLICY_FILE": str(tmp_path / "missing.yaml")})
    assert code == 0 and out.startswith(f"{good}: OK")
