"""How a signal stops the console script's command (main.run): Ctrl-C, and what `kill`,
`timeout`, `systemctl stop` and a closed terminal send, raise in the main thread wherever it is
(KeyboardInterrupt, Terminated), so that what cleans up after an error (`finally`, `except
BaseException`) cleans up after them too; once the command's outcome is known, they change
nothing (main.main then sets `running` to False).

A handler also runs inside a finalizer (a `__del__`, a weakref callback) that the release of an
object started, in the main thread: Python prints what it raises there as "Exception ignored
in: …" with a traceback, then drops it, and the command went on. Such a stop is raised again
instead, by a timer (SIGALRM) whose handler runs once the finalizer is done.
"""

from __future__ import annotations

import signal
import sys

#: What `kill`, `timeout`, `systemctl stop` and a closed terminal send: met as Ctrl-C is, so a
#: backup indexes what it stored and a restore removes its temporary files.
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: The timer's signal, which raises again a stop that a finalizer swallowed.
_AGAIN = signal.SIGALRM
#: Every signal whose handler raise_on_signals() sets.
HANDLED = (signal.SIGINT, *TERMINATING_SIGNALS, _AGAIN)
#: How long after a finalizer swallowed a stop it is raised again, in seconds: long enough for
#: the finalizer to be done, too short for anyone to notice.
AGAIN_AFTER_S = 0.001

#: Whether a stopping signal raises: from raise_on_signals() until the command's outcome is
#: known (main.main sets it to False with a store, not a call: signals are handled at calls and
#: loops, so none comes between the command's end and the store).
running = False
#: The signal whose stop a finalizer swallowed, until the timer raises it again.
_swallowed: int | None = None


class Terminated(BaseException):
    """A terminating signal, raised in the main thread wherever it is, as Ctrl-C's
    KeyboardInterrupt is: what cleans up after one (`finally`, `except BaseException`) cleans
    up after both. Not a KeyboardInterrupt, which click would turn into Abort."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def signal_of(stop: KeyboardInterrupt | Terminated) -> int:
    return stop.signum if isinstance(stop, Terminated) else signal.SIGINT


def raise_on_signals() -> None:
    """Raise on each stopping signal from now on, but for one ignored when corso started
    (`nohup` ignores SIGHUP so that a command outlives its terminal), as Python does Ctrl-C;
    and raise again a stop that a finalizer swallowed."""
    global running
    running = True
    for signum in (signal.SIGINT, *TERMINATING_SIGNALS):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)
    signal.signal(_AGAIN, _stop)
    sys.unraisablehook = _unraisable


def _stop(signum: int, frame) -> None:
    global _swallowed
    if signum == _AGAIN:
        signum, _swallowed = _swallowed, None
    if not running or signum is None:
        return
    if _in_unraisable_hook(frame):  # raised here, it would be printed and dropped in turn
        _raise_later(signum)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        raise Terminated(signum)


def _unraisable(unraisable) -> None:
    """sys.unraisablehook: a stop raised in a finalizer is raised again once the finalizer is
    done; anything else is printed as Python does."""
    if issubclass(unraisable.exc_type, (KeyboardInterrupt, Terminated)):
        _raise_later(signal_of(unraisable.exc_value))
    else:
        sys.__unraisablehook__(unraisable)


def _in_unraisable_hook(frame) -> bool:
    while frame is not None:
        if frame.f_code is _unraisable.__code__:
            return True
        frame = frame.f_back
    return False


def _raise_later(signum: int) -> None:
    global _swallowed
    _swallowed = signum
    signal.setitimer(signal.ITIMER_REAL, AGAIN_AFTER_S)
