"""`corso repo check-access NAME`: before init, try every action a repository needs.

Only backends that register a `check_access` probe get a subcommand. The result is a table
action / IAM permission / ok or the error; any failure makes the exit status non-zero.
"""

from __future__ import annotations

import click

from corso_core import passphrase, plugins
from corso_core.cli import output
from corso_core.cli.backends import BackendGroup
from corso_core.errors import PermissionDenied, UsageError
from corso_core.storage.backend import StorageBackend


def _check(backend: StorageBackend, values: dict) -> None:
    rows = backend.check_access(values)
    width = max(len(r["action"]) for r in rows)
    pwidth = max(len(r["permission"]) for r in rows)
    lines = [f"{'ACTION'.ljust(width)}  {'IAM PERMISSION'.ljust(pwidth)}  RESULT"]
    lines += [
        f"{r['action'].ljust(width)}  {r['permission'].ljust(pwidth)}  "
        f"{'ok' if r['ok'] else r['error']}"
        for r in rows
    ]
    output.emit({"checks": rows, "ok": all(r["ok"] for r in rows)}, "\n".join(lines))
    failed = [r["action"] for r in rows if not r["ok"]]
    if failed:
        raise PermissionDenied(f"{len(failed)} of {len(rows)} checks failed: {', '.join(failed)}")


class CheckAccessGroup(BackendGroup):
    """The backends that can probe their access; no passphrase (no repository is opened)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, b in plugins.backends().items() if b.check_access]

    def get_command(self, ctx: click.Context, name: str) -> click.Command:
        backend = plugins.backend(name)
        if backend.check_access is None:
            raise UsageError(f'backend "{name}" has no access check')
        command = super().get_command(ctx, name)
        command.params = [p for p in command.params if p.name != passphrase.PARAM]
        command.help = f"Check the access a repository on {backend.description} needs."
        return command


check_access = CheckAccessGroup(
    "check-access", _check, include_init_only=False,
    help="Probe every storage action a repository needs, before init; no repository is made.",
)
