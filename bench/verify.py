"""Byte-for-byte comparison of a restored tree with its source; a differing restore fails.

Beside names, types, link targets and bytes, every entry's permission bits (not a symlink's:
Linux cannot set them) and its mtime to the nanosecond (directories and symlinks too) must
match. All three tools keep and restore both: corso (the files source's mode and
mtime_ns), restic (mode; mtime as RFC 3339 with nanoseconds) and borg (mode; mtime in ns).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

BLOCK = 1024 * 1024
MAX_REPORTED = 5


def _entries(root: Path) -> dict[str, os.stat_result]:
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = os.lstat(path)
    return found


def _same_content(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            block_a, block_b = fa.read(BLOCK), fb.read(BLOCK)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def differences(source: Path, restored: Path) -> list[str]:
    """What differs between the trees (names, types, modes, mtimes, link targets, file bytes);
    [] if nothing."""
    if not restored.is_dir():
        return [f"{restored} does not exist"]
    expected, actual = _entries(source), _entries(restored)
    problems = [f"missing: {name}" for name in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected: {name}" for name in sorted(actual.keys() - expected.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        want, got = expected[name], actual[name]
        if stat.S_IFMT(want.st_mode) != stat.S_IFMT(got.st_mode):
            problems.append(f"type differs: {name}")
            continue
        if stat.S_ISLNK(want.st_mode):
            if os.readlink(source / name) != os.readlink(restored / name):
                problems.append(f"link target differs: {name}")
        elif stat.S_ISREG(want.st_mode):
            if want.st_size != got.st_size:
                problems.append(f"size differs: {name} ({want.st_size} != {got.st_size})")
            elif not _same_content(source / name, restored / name):
                problems.append(f"content differs: {name}")
        if not stat.S_ISLNK(want.st_mode) and stat.S_IMODE(want.st_mode) != stat.S_IMODE(
                got.st_mode):
            problems.append(f"mode differs: {name} ({stat.S_IMODE(want.st_mode):o} != "
                            f"{stat.S_IMODE(got.st_mode):o})")
        if want.st_mtime_ns != got.st_mtime_ns:
            problems.append(f"mtime differs: {name} ({want.st_mtime_ns} != {got.st_mtime_ns})")
        if len(problems) >= MAX_REPORTED:
            break
    return problems[:MAX_REPORTED]
