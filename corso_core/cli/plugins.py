"""`corso plugins`: what is installed, with versions (as `llm plugins` shows)."""

import click

from corso_core import plugins
from corso_core.cli.output import emit


@click.command("plugins")
def plugins_command() -> None:
    """List installed plugins, their versions and the hooks they implement."""
    rows = plugins.installed_plugins()
    lines = [
        f"{r['name']:<16} {r['distribution']} {r['version']}  hooks: {', '.join(r['hooks'])}"
        for r in rows
    ]
    emit(rows, "\n".join(lines) or "no plugins installed")
