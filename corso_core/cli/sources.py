"""`backup create NAME`, `restore NAME`, …: one subcommand per installed backup source.

Built from what plugins register (like the backend subcommands of `repo init`), so a new
source needs no change here. Each command gets the connected repository (`uses_repository`),
the source's own options, the command's generic options, and the global flags.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from corso_core import plugins
from corso_core.cli import output
from corso_core.cli.connection import uses_repository
from corso_core.errors import UsageError
from corso_core.sources.source import Source

#: Builds one command's parts for a source: (its options, its function(repository, **values)).
Builder = Callable[[Source], tuple[Sequence[click.Option], Callable]]


def _empty_id(ctx: click.Context, problem: str) -> click.BadParameter:
    return click.BadParameter(f"{problem} (corso backup list {ctx.command.name} shows the IDs)")


def _backup_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise _empty_id(ctx, "must not be empty")
    return value


def backup_option(help_text: str) -> click.Option:
    """`--backup ID`. An empty ID is bad usage (exit 2), not a backup the repository lacks: it
    is refused before the repository is opened, naming the flag."""
    return click.Option(["--backup"], required=True, metavar="ID", callback=_backup_id,
                        help=help_text)


def _backup_ids(ctx: click.Context, param: click.Parameter,
                values: tuple[str, ...]) -> list[str]:
    """Repeated and comma-separated alike; each ID once, in the order first named."""
    ids = []
    for value in values:
        _backup_id(ctx, param, value)
        for backup_id in value.split(","):
            if not backup_id.strip():  # "ID," or "ID,,ID2": a slip, maybe an ID left out
                raise _empty_id(ctx, f"{value!r} holds an empty ID")
            ids.append(backup_id.strip())
    return list(dict.fromkeys(ids))


def backups_option(help_text: str) -> click.Option:
    """`--backups ID[,ID…]` (repeatable): each ID as `--backup`'s, refused if empty."""
    return click.Option(["--backups"], required=True, multiple=True, metavar="ID[,ID…]",
                        callback=_backup_ids, help=help_text)


def source_named(name: str) -> Source:
    installed = plugins.sources()
    if name not in installed:
        raise UsageError(f'unknown source "{name}"; installed: {", ".join(installed) or "none"}')
    return installed[name]


class SourceGroup(click.Group):
    """A group whose subcommands are the installed sources."""

    def __init__(self, name: str, build: Builder, *, warms_up: bool = False,
                 storage_first: bool = False, **kwargs) -> None:
        """`warms_up`: the command calls its source's warm_up before opening the repository;
        `storage_first`: as uses_repository's."""
        super().__init__(name, **kwargs)
        self.build = build
        self.warms_up = warms_up
        self.storage_first = storage_first

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(plugins.sources())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """`corso backup create --path P`, the source left out, says what is missing."""
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            example = next(iter(plugins.sources()), "SOURCE")
            e.message += (f" Name the source before its options: {ctx.command_path} {example} "
                          f"{e.option_name} … (sources: {', '.join(plugins.sources())}).")
            raise

    def get_command(self, ctx: click.Context, name: str) -> click.Command:
        source = source_named(name)
        options, function = self.build(source)
        callback = uses_repository(function, source.warm_up if self.warms_up else None,
                                   storage_first=self.storage_first)
        return click.Command(
            name,
            params=[*options, *reversed(callback.__click_params__), *output.global_options()],
            callback=callback,
            help=f"{self.help.rstrip('.')}: {source.description}.",
            short_help=source.description,
        )
