"""The console script runs its commands in two malloc arenas (cli/arenas.py), whatever the
number of threads that allocate; glibc would give each its own."""

import platform
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="M_ARENA_MAX is glibc's")

#: Six threads allocate at once, then glibc's malloc_stats lists the arenas on stderr.
PROBE = """
import ctypes, threading
from corso_core.cli import launch, main as cli_main

def six_threads_allocate(argv=None, key_begun=False):
    barrier = threading.Barrier(6)
    def work():
        kept = [bytearray(4096) for _ in range(64)]  # past pymalloc: from the thread's arena
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ctypes.CDLL(None).malloc_stats()
    raise SystemExit(0)

cli_main.main = six_threads_allocate
{call}
"""


def arenas_after(call: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE.format(call=call)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return len(re.findall(r"^Arena \d+:", done.stderr, re.MULTILINE))


def test_the_console_script_allocates_from_two_arenas():
    assert arenas_after("launch.run()") == 2


def test_without_the_limit_each_thread_would_have_its_own():
    """The probe can tell: the same threads, outside the console script, fill more."""
    assert arenas_after("six_threads_allocate()") > 2
