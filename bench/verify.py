"""Byte-for-byte comparison of a restored tree with its source; a differing restore fails."""

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
    """What differs between the trees (names, types, link targets, file bytes); [] if nothing."""
    if not restored.is_dir():
        return [f"{restored} does not exist"]
    expected, actual = _entries(source), _entries(restored)
    problems = [f"missing: {name}" for name in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected: {name}" for name in sorted(actual.keys() - expected.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        want, got = expected[name], actual[name]
        if stat.S_IFMT(want.st_mode) != stat.S_IFMT(got.st_mode):
            problems.append(f"type differs: {name}")
        elif stat.S_ISLNK(want.st_mode):
            if os.readlink(source / name) != os.readlink(restored / name):
                problems.append(f"link target differs: {name}")
        elif stat.S_ISREG(want.st_mode):
            if want.st_size != got.st_size:
                problems.append(f"size differs: {name} ({want.st_size} != {got.st_size})")
            elif not _same_content(source / name, restored / name):
                problems.append(f"content differs: {name}")
        if len(problems) >= MAX_REPORTED:
            break
    return problems[:MAX_REPORTED]
