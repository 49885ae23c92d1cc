"""Run one command and measure its whole process tree: wall time, CPU time and peak RSS.

CPU time and the largest single-process RSS come from `wait4` (the kernel's rusage of the child
and every descendant it reaped, the same figures `/usr/bin/time` prints). A tool that forks
workers holds memory in several processes at once, so a sampler also sums the RSS of the live
tree every 20 ms; the peak is the larger of the two. A child between its (v)fork and its exec
shares its parent's memory, and /proc reports that memory in both: a sample taken then counts
it twice (why corso starts its `du` only once scrypt's buffer is freed, cli/connection.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 0.02


@dataclass
class Measurement:
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    cold_cache: bool  # the page cache was dropped right before the step
    stdout: str

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "cold_cache": self.cold_cache,
        }


class StepFailed(Exception):
    """A measured command exited non-zero or timed out; the message says which and why."""


def drop_page_cache() -> bool:
    """Write back dirty pages and drop the page cache; False where the machine does not allow it."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def _tree_rss(root_pid: int) -> int:
    """Sum of the resident set sizes of `root_pid` and all its descendants (0 once it is gone)."""
    total, pending = 0, [root_pid]
    while pending:
        pid = pending.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
            for task in os.listdir(f"/proc/{pid}/task"):
                children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                pending.extend(int(child) for child in children)
        except (OSError, ValueError):
            continue  # the process ended while we looked
    return total


def run_measured(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    cold_cache: bool = False,
    timeout_s: float = 1800,
) -> Measurement:
    """Run `command`; raise StepFailed if it fails or times out, else return what it cost."""
    dropped = drop_page_cache() if cold_cache else False
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,  # its own process group, so a timeout kills the whole tree
        )
        peak_tree = 0
        done = threading.Event()
        timed_out = threading.Event()

        def watch() -> None:
            nonlocal peak_tree
            deadline = started + timeout_s
            while not done.wait(SAMPLE_SECONDS):
                peak_tree = max(peak_tree, _tree_rss(process.pid))
                if time.perf_counter() > deadline:
                    timed_out.set()
                    os.killpg(process.pid, signal.SIGKILL)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        # wait4, not Popen.wait: it hands back the rusage of the child and its reaped descendants.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
        returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if timed_out.is_set():
        raise StepFailed(f"{command[0]} timed out after {timeout_s:g} s")
    if returncode != 0:
        last_line = (stderr.strip().splitlines() or ["(no output)"])[-1]
        raise StepFailed(f"{command[0]} exited {returncode}: {last_line}")
    return Measurement(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=max(peak_tree, usage.ru_maxrss * 1024),
        cold_cache=dropped,
        stdout=stdout,
    )
