"""Global flags and output: every command prints through here, as text or as --json."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

import click

from corso_core.errors import CorsoError, UsageError

LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass
class GlobalFlags:
    """Flags accepted by every command, before or after its name (as Corso's are)."""

    config_file: str | None = None
    json: bool = False
    hide_progress: bool = False
    log_level: str = "info"
    log_file: str | None = None

    @property
    def show_progress(self) -> bool:
        return not self.hide_progress and not self.json and sys.stderr.isatty()


def flags() -> GlobalFlags:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalFlags):
        root.obj = GlobalFlags()
    return root.obj


def _setter(attribute: str):
    """Record a global flag given at any level; a level where it is absent changes nothing."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        if value == "":
            raise click.BadParameter("must not be empty", ctx, param)
        if value:
            setattr(flags(), attribute, value)
            if attribute.startswith("log_"):
                setup_logging(flags())

    return callback


def global_options() -> list[click.Option]:
    """Fresh option objects for one command (click options cannot be shared between commands)."""
    return [
        click.Option(["--config-file"], metavar="FILE", expose_value=False,
                     callback=_setter("config_file"),
                     help="Config file to use instead of $CORSO_CONFIG_DIR/corso.toml."),
        click.Option(["--json"], is_flag=True, expose_value=False, callback=_setter("json"),
                     help="Print machine-readable JSON on stdout."),
        click.Option(["--hide-progress"], is_flag=True, expose_value=False,
                     callback=_setter("hide_progress"), help="Do not show progress on stderr."),
        click.Option(["--log-level"], type=click.Choice(LOG_LEVELS), default=None,
                     expose_value=False, callback=_setter("log_level"),
                     help="Log verbosity (default info; without --log-file, stderr shows warnings "
                          "and worse unless debug)."),
        click.Option(["--log-file"], metavar="FILE", expose_value=False,
                     callback=_setter("log_file"),
                     help="Append the log to FILE (default: stderr)."),
        click.Option(["-h", "--help"], is_flag=True, expose_value=False, is_eager=True,
                     callback=_show_help, help="Show this message and exit."),
    ]


def _show_help(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """click's own --help, printed as every result is (a stdout that cannot take it is one
    error line, not a traceback): the option's names take the place of click's."""
    if value and not ctx.resilient_parsing:
        print_text(ctx.get_help())
        ctx.exit()


_DETAILED = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


#: The progress display's console while it is shown (cli/progress.py): a line said on stderr
#: meanwhile is printed through it, above the bar, not into it.
_progress_console = None


def progress_shown_on(console) -> None:
    """`console` shows a progress display from now on (None: no longer)."""
    global _progress_console
    _progress_console = console


def _to_stderr(line: str) -> None:
    console = _progress_console
    if console is not None:
        console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
    else:
        click.echo(line, err=True)


class _Stderr(logging.Handler):
    """Log records on stderr, through `_to_stderr`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _to_stderr(self.format(record))
        except Exception:
            self.handleError(record)


class _StderrFormatter(logging.Formatter):
    """Warnings and errors as the CLI's own lines (`corso: warning: …`), so a repository's
    damage or self-repair reads like every other message; debug detail in full."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            kind = "warning" if record.levelno == logging.WARNING else "error"
            return f"corso: {kind}: {record.getMessage()}"
        return _DETAILED.format(record)


class _LogFile(logging.FileHandler):
    """--log-file: a write that fails (a full disk) is said once on stderr, not as a
    traceback for every record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            _to_stderr(f"corso: warning: cannot write --log-file {self.baseFilename}: "
                       f"{getattr(error, 'strerror', None) or error}")


#: What the command told the user (the lines `say` puts on stderr, at warning or error; its
#: result, at info), for --log-file alone: stdout and stderr have them already (without a
#: handler, logging's last resort would print them there again).
_said = logging.getLogger("corso.said")
_said.propagate = False
_said.addHandler(logging.NullHandler())


def setup_logging(globals_: GlobalFlags) -> None:
    """Warnings and worse always reach stderr; below them, stderr shows only debug (asked for
    without --log-file), and --log-file gets every record at the chosen level, every
    `corso: warning:` or `corso: error:` line the command said (see `say`), and at info its
    result as printed (see `emit`): a scheduled backup's log says what it did."""
    level = {"warn": logging.WARNING}.get(globals_.log_level, None) or getattr(
        logging, globals_.log_level.upper()
    )
    stderr = _Stderr()
    stderr.setFormatter(_StderrFormatter())
    stderr.setLevel(logging.DEBUG if level <= logging.DEBUG and not globals_.log_file
                    else logging.WARNING)
    handlers: list[logging.Handler] = [stderr]
    if globals_.log_file:
        try:
            log_file = _LogFile(globals_.log_file)
        except OSError as e:
            raise UsageError(f"cannot open --log-file {globals_.log_file}: "
                             f"{e.strerror or e}") from None
        log_file.setFormatter(_DETAILED)
        log_file.setLevel(level)
        handlers.append(log_file)
    # "corso" is the CLI's logger; modules log under their import path, "corso_core.…".
    for name in ("corso", "corso_core"):
        root = logging.getLogger(name)
        root.handlers[:] = handlers
        root.setLevel(min(handler.level for handler in handlers))
    _said.handlers[:] = handlers[1:] or [logging.NullHandler()]
    _said.setLevel(level)


class ReaderGone(Exception):
    """Whoever read stdout went away (`corso backup list | head -1`): nothing more to say."""


def emit(data, text: str | None = None) -> None:
    """Print a command's result: `data` as JSON with --json, else `text` (or data as lines)."""
    if text is not None:
        _said.info(text)
    if flags().json:
        print_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif text is not None:
        print_text(text)


def print_text(text: str) -> None:
    """A stdout that cannot take the result (a full disk or /dev/full behind a redirection,
    a closed descriptor) is an error, in one line on stderr, not a traceback; a reader gone is
    ReaderGone."""
    if sys.stdout is None:  # click would print nothing, and say nothing
        raise CorsoError("cannot print the result: stdout is closed")
    try:
        click.echo(text)
    except BrokenPipeError:
        raise ReaderGone from None
    except OSError as e:
        raise CorsoError(f"cannot print the result to stdout: {e.strerror or e}") from None


def say(kind: str, message: str) -> None:
    """One `corso: KIND: …` line on stderr: `error` for an item a backup or restore could not
    copy (the run ends incomplete) or the error that ends a command, `warning` for one left
    out on purpose, and the like; --log-file gets it too."""
    tell(f"corso: {kind}: {message}", logging.ERROR if kind == "error" else logging.WARNING)


def tell(line: str, level: int = logging.ERROR) -> None:
    """A line of the CLI's own on stderr (`corso: interrupted`), and in --log-file."""
    _said.log(level, line)
    _to_stderr(line)


def warn(message: str) -> None:
    say("warning", message)
