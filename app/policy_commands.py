"""``respawn policy check [FILE]``: validate a policy file the way the service would load it."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from app.policy import PolicyError, PolicyProblem, parse_policy


@click.command("check")
@click.argument(
    "file",
    required=False,
    default="policy.yaml",
    envvar="RESPAWN_POLICY_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
)
def check_command(file: Path) -> None:
    """Validate the policy FILE (default: $RESPAWN_POLICY_FILE or policy.yaml).

    Exits 0 when it is valid, 1 with every problem as file:line: message.
    """
    source = str(file)
    try:
        content = file.read_bytes()
    except FileNotFoundError:
        _fail([PolicyProblem(source, 1, "no such file (respawn would use the built-in policy)")])
    except OSError as exc:
        _fail([PolicyProblem(source, 1, f"cannot read the file: {exc.strerror or exc}")])
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        _fail([PolicyProblem(source, line, "not UTF-8 text: the policy file must be UTF-8")])
    try:
        policy = parse_policy(text, source)
    except PolicyError as exc:
        _fail(list(exc.problems))
    for warning in policy.warnings:
        click.echo(f"{warning} (warning)", err=True)
    count = len(policy.rules)
    click.echo(
        f"{source}: OK (version {policy.version_hash}, {count} rule{'' if count == 1 else 's'})"
    )


def _fail(problems: list[PolicyProblem]) -> NoReturn:
    for problem in problems:
        click.echo(str(problem), err=True)
    raise SystemExit(1)
