"""The `respawn` command. Each subcommand's module is imported only when it runs, so
`respawn serve` never loads the simulator and `respawn policy check` never opens a database."""

from __future__ import annotations

import importlib
from typing import Any

import click

COMMANDS = {
    "db": "app.cli.db:db_group",
    "serve": "app.cli.serve:serve",
    "worker": "app.cli.worker:worker",
    "demo": "app.cli.demo:demo",
    "policy": "app.cli.policy:policy_group",
    "user": "app.cli.users:user_group",
    "notify": "app.cli.notify:notify_group",
    "insights": "app.cli.insights:insights_group",
    "simulator": "app.simulator.commands:simulator_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are named here and imported when asked for."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS)
def main() -> None:
    """respawn: restart failed Runner executions by policy."""


if __name__ == "__main__":
    main()
