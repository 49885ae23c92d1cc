"""Where the passphrase comes from: --passphrase, else $CORSO_PASSPHRASE, else a hidden prompt.

It is never read from or written to the config file, and never logged.
"""

from __future__ import annotations

import os
import sys

import click

from corso_core.config import PASSPHRASE_ENV
from corso_core.errors import UsageError
from corso_core.repo.repository import check_passphrase

#: The parameter name of the --passphrase option in a command's keyword arguments.
PARAM = "passphrase"


def option() -> click.Option:
    """A fresh --passphrase option (click options cannot be shared between commands)."""
    return click.Option(
        ["--passphrase"], help=f"Repository passphrase (else ${PASSPHRASE_ENV}, else a prompt "
                               "when stdin is a terminal). Never saved."
    )


def resolve(flag_value: str | None, *, confirm: bool = False) -> str:
    """The passphrase to use; the prompt (when stdin is a terminal) asks twice if `confirm`."""
    if flag_value is not None:
        return check_passphrase(flag_value)
    if PASSPHRASE_ENV in os.environ:
        return check_passphrase(os.environ[PASSPHRASE_ENV])
    return prompt("Repository passphrase", confirm=confirm,
                  missing=f"no passphrase: give --passphrase or set {PASSPHRASE_ENV}")


def prompt(text: str, *, confirm: bool, missing: str) -> str:
    """Ask on the terminal without echo; `missing` is the error when there is no terminal.

    With `confirm`, a second answer that differs stops the command with one error line, as
    any bad input does (restic stops so too): click's own confirmation printed "Error: The two
    entered values do not match." in its style, not corso's, and asked again."""
    if sys.stdin is None or not sys.stdin.isatty():  # None: closed when corso started (<&-)
        raise UsageError(missing)
    secret = check_passphrase(_ask(text))
    if confirm and _ask("Repeat for confirmation") != secret:
        raise UsageError("the passphrase typed again does not match the first; nothing changed")
    return secret


def _ask(text: str) -> str:
    return click.prompt(text, hide_input=True, default="", show_default=False)
