"""How a signal stops the console script's command (main.run): Ctrl-C, and what `kill`,
`timeout`, `systemctl stop` and a closed terminal send, raise Stopped in the main thread wherever
it is, so that what cleans up after an error (`finally`, `except BaseException`) cleans up after
them too; once the command's outcome is known, they change
nothing (main.main then sets `running` to False).

A handler also runs inside a finalizer (a `__del__`, a weakref callback) that the release of an
object started, in the main thread: Python prints what it raises there as "Exception ignored
in: …" with a traceback, then drops it, and the command went on. Such a stop is raised again
instead, by a timer (SIGALRM) whose handler runs once the finalizer is done; and so is one that
comes while a function marked `finished_first` runs (taking down the progress display: left
half-done, its line stays and the terminal's cursor hidden).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

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
#: The signal whose stop a finalizer swallowed, or that came while a function marked
#: `finished_first` ran, until the timer raises it again.
_swallowed: int | None = None


class Stopped(BaseException):
    """A stopping signal (Ctrl-C too), raised in the main thread wherever it is: what cleans
    up after an error (`finally`, `except BaseException`) cleans up after it. Not a
    KeyboardInterrupt, which click takes for itself: it made Ctrl-C an Abort, after a blank
    line on stderr (for the terminal's "^C") even into a file or a pipe."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def signal_of(stop: KeyboardInterrupt | Stopped) -> int:
    """The signal of a stop: Python's own KeyboardInterrupt comes from Ctrl-C before
    raise_on_signals(), or where main.main runs without it."""
    return stop.signum if isinstance(stop, Stopped) else signal.SIGINT


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
    if _inside_one_finished_first(frame):
        _raise_later(signum)
    else:
        raise Stopped(signum)


#: The code of the functions a stop waits for (see the module's docstring).
_FINISHED_FIRST: set = set()


def finished_first(function: Callable) -> Callable:
    """Mark `function` as one a stop waits for: it is raised once the function returns."""
    _FINISHED_FIRST.add(function.__code__)
    return function


def _inside_one_finished_first(frame) -> bool:
    while frame is not None:
        if frame.f_code in _FINISHED_FIRST:
            return True
        frame = frame.f_back
    return False


# A Condition's (an Event's: a thread's start waits on one) taking back and letting go of its
# lock: a stop between the two left it let go, or held for good, and the `with` around them
# failed with "RuntimeError: release unlocked lock" (Ctrl-C held down, 1 backup in 100).
finished_first(threading.Condition._acquire_restore)
finished_first(threading.Condition.__exit__)
# The handler itself: a signal that came while it ran (Ctrl-C held down sends thousands) was
# handled inside it, each one looking through a deeper stack, for seconds.
finished_first(_stop)


@finished_first  # a stop raised here would be printed and dropped in turn
def _unraisable(unraisable) -> None:
    """sys.unraisablehook: a stop raised in a finalizer is raised again once the finalizer is
    done; anything else is printed as Python does."""
    if issubclass(unraisable.exc_type, Stopped):
        _raise_later(signal_of(unraisable.exc_value))
    else:
        sys.__unraisablehook__(unraisable)


def _raise_later(signum: int) -> None:
    global _swallowed
    _swallowed = signum
    signal.setitimer(signal.ITIMER_REAL, AGAIN_AFTER_S)
