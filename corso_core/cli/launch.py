"""The `corso` console script: a signal that arrives while the command's modules load ends it
as one that arrives later does, with its one line and exit status, not a traceback from inside
an import (main.run installs its handlers only once ~0.1 s of imports are done).

Nothing has been written by then, so the process just leaves. Only os and signal are loaded
before these handlers are in place; Python's own start-up, before them, cannot be covered.
"""

from __future__ import annotations

import os
import signal
import sys

#: Ctrl-C, then what `kill`, `timeout`, `systemctl stop` and a closed terminal send.
_STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stopped_by(signum: int) -> tuple[int, str]:
    """The exit status and the line of a command a signal stopped, here or in main.run."""
    if signum == signal.SIGINT:
        return 130, "corso: interrupted"
    return 128 + signum, f"corso: terminated ({signal.Signals(signum).name})"


def echo_closer(signum: int) -> str:
    """What ends the line of a terminal's "^C" (Ctrl-C's echo) before the line of stopped_by,
    which then starts a line of its own; nothing into a file or a pipe, where none was echoed."""
    return "\n" if signum == signal.SIGINT and os.isatty(2) else ""


def _stop_while_loading(signum: int, frame) -> None:
    status, line = stopped_by(signum)
    try:
        os.write(2, f"{echo_closer(signum)}{line}\n".encode())
    except OSError:
        pass
    os._exit(status)


def run() -> None:
    """Load the CLI with the early handlers in place (a signal ignored when corso started, as
    `nohup` ignores SIGHUP, stays ignored), the files commands imported before asked of the disk
    (cli/warm_start.py) and the key's derivation begun (cli/cached_key.py), then main.run()."""
    before = {signum: signal.getsignal(signum) for signum in _STOPPING_SIGNALS}
    for signum, handler in before.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _stop_while_loading)
    from corso_core.cli import arenas

    arenas.limit_malloc_arenas()  # before the first thread
    from corso_core.cli import warm_start

    warm_start.begin(sys.argv[1:])  # the disk reads the modules about to load
    from corso_core.cli import cached_key

    cached_key.start(sys.argv[1:])  # scrypt runs while the CLI's modules load
    from corso_core.cli import main

    main.run()  # which replaces these handlers (cli/stopping.py)
