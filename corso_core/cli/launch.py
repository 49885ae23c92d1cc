"""The `corso` console script: a signal that arrives while the command's modules load ends it
as one that arrives later does, with its one line and exit status, not a traceback from inside
an import (main.run installs its handlers only once ~0.1 s of imports are done).

Nothing has been written by then, so the process just leaves. Only os and signal are loaded
before these handlers are in place; Python's own start-up, before them, cannot be covered.
"""

from __future__ import annotations

import os
import signal

#: Each signal's exit status and line, as main.run gives them once it runs.
_STOPPED_BY = {
    signal.SIGINT: (130, "interrupted"),
    signal.SIGTERM: (128 + signal.SIGTERM, "terminated (SIGTERM)"),
    signal.SIGHUP: (128 + signal.SIGHUP, "terminated (SIGHUP)"),
}


def _stop_while_loading(signum: int, frame) -> None:
    status, what = _STOPPED_BY[signum]
    try:
        os.write(2, f"corso: {what}\n".encode())
    except OSError:
        pass
    os._exit(status)


def run() -> None:
    """Load the CLI with the early handlers in place (a signal ignored when corso started, as
    `nohup` ignores SIGHUP, stays ignored), give Ctrl-C back to Python, then main.run()."""
    before = {signum: signal.getsignal(signum) for signum in _STOPPED_BY}
    for signum, handler in before.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _stop_while_loading)
    from corso_core.cli import main  # SIGTERM and SIGHUP: main.run replaces these handlers

    signal.signal(signal.SIGINT, before[signal.SIGINT])  # KeyboardInterrupt, as main expects
    main.run()
