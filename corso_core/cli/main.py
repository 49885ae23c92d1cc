"""The `corso` command: the root group, global flags, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import sys

import click

from corso_core import __version__
from corso_core.cli import output
from corso_core.cli.backup import backup
from corso_core.cli.plugins import plugins_command
from corso_core.cli.repo import repo
from corso_core.cli.restore import restore
from corso_core.errors import CorsoError

log = logging.getLogger("corso")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="corso")
def cli() -> None:
    """Encrypted, deduplicated backups to object storage.

    Start with `corso repo init filesystem --path DIR` (or `s3 --bucket B` with corso-s3).
    """


cli.add_command(repo)
cli.add_command(plugins_command)
cli.add_command(backup)
cli.add_command(restore)


def _add_global_options(command: click.Command) -> None:
    """Give every command the global flags, so they work before or after its name."""
    command.params.extend(output.global_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_global_options(sub)


_add_global_options(cli)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a CorsoError or usage error becomes one line on stderr and its exit code."""
    try:
        cli.main(args=argv, prog_name="corso", standalone_mode=False)
    except CorsoError as e:
        log.debug("error", exc_info=True)
        click.echo(f"corso: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("corso: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"corso: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("corso: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
