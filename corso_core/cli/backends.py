"""`repo init NAME` / `repo connect NAME`: one subcommand per installed storage backend.

The subcommands are built from what plugins register, so a new backend needs no change here.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from corso_core import passphrase, plugins
from corso_core.cli import output
from corso_core.storage.backend import StorageBackend

#: Called with the backend and the option values (by name) once the flags are parsed.
Action = Callable[[StorageBackend, dict], None]


class BackendGroup(click.Group):
    """A group whose subcommands are the installed backends."""

    def __init__(self, name: str, action: Action, include_init_only: bool, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.action = action
        self.include_init_only = include_init_only

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(plugins.backends())

    def get_command(self, ctx: click.Context, name: str) -> click.Command:
        backend = plugins.backend(name)  # an uninstalled one raises, with its install hint
        options = [
            o
            for o in backend.options
            if self.include_init_only or o.name not in backend.init_only
        ]

        def callback(**values) -> None:
            self.action(backend, values)

        return click.Command(
            name,
            params=[*options, passphrase.option(), *output.global_options()],
            callback=callback,
            help=f"{self.name.capitalize()} a repository on {backend.description}.",
            short_help=backend.description,
        )
