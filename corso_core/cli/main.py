"""The `corso` command: the root group, global flags, and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys

import click

from corso_core import __version__
from corso_core.cli import cached_key, launch, output, stopping, warm_start
from corso_core.cli.stopping import Stopped
from corso_core.errors import CorsoError

log = logging.getLogger("corso")

#: The top-level commands and where each is defined: a command's module (and the engine parts
#: it imports) is loaded only when that command runs or help lists it, so `backup create` does
#: not pay for the upkeep and restore modules (~45 ms with a cold page cache).
COMMANDS = {
    "backup": "corso_core.cli.backup:backup",
    "plugins": "corso_core.cli.plugins:plugins_command",
    "repo": "corso_core.cli.repo:repo",
    "restore": "corso_core.cli.restore:restore",
}


class LazyGroup(click.Group):
    """The root group: its subcommands are imported on first use (see COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, _, attribute = COMMANDS[name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            _add_global_options(command)
            self.add_command(command, name)
        return self.commands.get(name)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """click's --version, printed as every result is (output.print_text)."""
    if value and not ctx.resilient_parsing:
        output.print_text(f"corso, version {__version__}")
        ctx.exit()


@click.group(cls=LazyGroup)
@click.option("-v", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version, help="Show the version and exit.")
def cli() -> None:
    """Encrypted, deduplicated backups to object storage.

    Start with `corso repo init filesystem --path DIR` (or `s3 --bucket B` with corso-s3).
    """


def _add_global_options(command: click.Command) -> None:
    """Give every command the global flags, so they work before or after its name."""
    command.params.extend(output.global_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_global_options(sub)


cli.params.extend(output.global_options())


#: Flags whose value is a secret (the core's passphrases, a backend's credentials).
_SECRET_FLAG = re.compile(r"--[\w-]*(passphrase|secret|token)[\w-]*")


def _without_secrets(message: str, argv: list[str]) -> str:
    """A usage error quotes the arguments it could not place: a secret among them (a
    passphrase taken for another flag's value when that value was left out) shows as ***."""
    secrets = [value for flag, value in zip(argv, argv[1:], strict=False)
               if _SECRET_FLAG.fullmatch(flag)]
    secrets += [arg.partition("=")[2] for arg in argv
                if _SECRET_FLAG.fullmatch(arg.partition("=")[0]) and "=" in arg]
    for secret in filter(None, secrets):  # whole arguments only: "a" leaves "extra" alone
        message = re.sub(rf"(?<![^\s('\"]){re.escape(secret)}(?![^\s)'\"])", "***", message)
    return message


#: The exit status when stdout's reader went away, as a process SIGPIPE ends gets (128 + 13).
READER_GONE = 141

#: How long a thread holds the GIL before another that waits for it gets it, in seconds
#: (Python's default: 0.005). A backup's and a restore's threads return from native work
#: (reads, hashing, compression, decryption, writes) many times a millisecond and then wait
#: for the GIL; at 5 ms a thread busy in Python kept them waiting. Same-run medians on the
#: 1 GiB bench set, 1 ms against 5: first backup 4.57 against 4.67 s (6 runs each); full
#: restore 1.96 against 1.99 s, and 2.28 against 2.50 s where the filesystem had just deleted
#: a tree as large (its file creates then cost far more kernel time), 8 runs each. 0.2 ms was
#: no faster, and cost more CPU.
SWITCH_INTERVAL_S = 0.001


def _stopped_by(e: KeyboardInterrupt | Stopped) -> int:
    """Say why the command stopped (if stderr is still there: a hangup may have closed the
    terminal) and return its exit status."""
    signum = stopping.signal_of(e)
    code, line = launch.stopped_by(signum)
    try:
        click.echo(launch.echo_closer(signum), err=True, nl=False)
        output.tell(line)
    except OSError:
        pass
    return code


def main(argv: list[str] | None = None, *, key_begun: bool = False) -> None:
    """Run the CLI; a CorsoError or usage error becomes one line on stderr and its exit code.

    `key_begun`: the console script has begun deriving the key for this command line already
    (cli/launch.py)."""
    argv_given = sys.argv[1:] if argv is None else argv
    output.setup_logging(output.GlobalFlags())  # a log flag, once parsed, sets it up again
    try:
        try:
            if not key_begun:
                cached_key.start(argv_given)
            cli.main(args=argv, prog_name="corso", standalone_mode=False)
        finally:  # the outcome is known: a signal no longer stops anything (cli/stopping.py)
            stopping.running = False
    except CorsoError as e:
        log.debug("error", exc_info=True)
        output.say("error", str(e))
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:  # a prompt's EOF, or Ctrl-C without run()'s handlers
        interrupted = isinstance(e.__cause__, KeyboardInterrupt)
        output.tell(f"corso: {'interrupted' if interrupted else 'aborted'}")
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as e:  # `corso backup`: its help, as click's
        e.show()
        sys.exit(e.exit_code)
    except click.ClickException as e:
        output.say("error", _without_secrets(e.format_message(), argv_given))
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, Stopped) as e:
        sys.exit(_stopped_by(e))
    except output.ReaderGone:
        sys.exit(READER_GONE)
    except RecursionError:  # the walks of trees recurse once per directory level
        output.say("error", "directories nested deeper than corso can follow (about 900 "
                            "levels)")
        sys.exit(1)
    sys.exit(0)


def run() -> None:
    """What the `corso` console script (cli/launch.py) runs once the CLI is loaded, the key's
    derivation begun and malloc limited to two arenas (cli/arenas.py): main(), with Ctrl-C,
    SIGTERM and SIGHUP stopping it (cli/stopping.py) and the GIL passed on every
    SWITCH_INTERVAL_S, then leave without the interpreter's teardown.

    Freeing every object one by one at exit (boto3's service models, the index, the trees)
    took ~65 ms of every command, which the OS does at once when the process ends. Everything a
    command writes is closed (and renamed into place) before main() returns; only the standard
    streams and the log have buffers left, and they are flushed here.
    """
    try:
        try:
            stopping.raise_on_signals()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            main(key_begun=True)
        except SystemExit as e:  # main() always ends with one, carrying an int
            code = e.code
        if code == 0:
            warm_start.remember()
    except (KeyboardInterrupt, Stopped) as e:  # before main() was ready for one
        stopping.running = False  # a store, as in main()
        code = _stopped_by(e)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # closed when corso started (`>&-`)
                stream.flush()
        except OSError:
            pass  # the reader went away (`corso backup list | head`): nothing more to say
    os._exit(code)
