"""`corso repo …`: create, connect to and inspect repositories."""

import click

from corso_core.cli.backends import BackendGroup
from corso_core.errors import CorsoError


@click.group()
def repo() -> None:
    """Create, connect to and inspect repositories."""


def _init(backend, values) -> None:
    raise CorsoError("repo init is being built")


def _connect(backend, values) -> None:
    raise CorsoError("repo connect is being built")


repo.add_command(BackendGroup("init", _init, include_init_only=True, help="Create a repository."))
repo.add_command(
    BackendGroup("connect", _connect, include_init_only=False,
                 help="Connect to an existing repository and remember the connection.")
)
