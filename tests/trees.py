"""Test trees and how to compare them: the tricky tree, and a snapshot of a tree's bytes and
metadata that two trees must share to count as the same backup/restore round trip."""

from __future__ import annotations

import hashlib
import os
import stat

#: Average chunk size the engine tests' repositories use (CORSO_TEST_CHUNK_SIZE): min is a
#: quarter, max four times this.
TEST_CHUNK = 16 * 1024
NS_MTIME = 1_234_567_890_123_456_789


def _write(path: bytes, data: bytes, mode: int | None = None) -> None:
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def build_tricky_tree(root: str) -> bytes:
    """Everything a backup must carry across; returns the tree's root as bytes."""
    r = os.fsencode(root)
    j = os.path.join
    os.makedirs(j(r, b"sub", b"deeper"))
    os.mkdir(j(r, b"empty dir"))
    _write(j(r, "unicodé ñame ☃.txt".encode()), "snow ☃\n".encode() * 100)
    _write(j(r, b"non-utf8-\xff\xfe.bin"), b"\x00\xff" * 1000)
    _write(j(r, b"with space and\nnewline"), b"lines\n" * 10)
    _write(j(r, b"empty"), b"")
    _write(j(r, b"sub", b"file.txt"), b"hello\n")
    os.symlink(b"sub/file.txt", j(r, b"rel-link"))
    os.symlink(b"/etc/hostname", j(r, b"abs-link"))
    os.symlink(b"no/such/target", j(r, b"dangling-link"))
    _write(j(r, b"hard-a"), b"shared by two names\n" * 50)
    os.link(j(r, b"hard-a"), j(r, b"sub", b"hard-b"))
    rnd = os.urandom(TEST_CHUNK * 40)
    for size in (TEST_CHUNK // 4, TEST_CHUNK * 4, TEST_CHUNK * 8, TEST_CHUNK * 4 + 1):
        _write(j(r, b"sub", b"boundary-%d" % size), rnd[:size])  # at min / max chunk sizes
    _write(j(r, b"sub", b"deeper", b"large.bin"), rnd)
    _write(j(r, b"zeros-at-max"), b"\0" * TEST_CHUNK * 4 * 3)  # cut exactly at max, 3 times
    _write(j(r, b"setuid-exe"), b"#!/bin/sh\n", 0o4755)
    _write(j(r, b"read-only"), b"ro\n", 0o444)
    _write(j(r, b"no-perms"), b"secret\n", 0o000)
    os.mkdir(j(r, b"sticky"), 0o1777)
    os.chmod(j(r, b"sticky"), 0o1777)
    os.chmod(j(r, b"sub", b"deeper"), 0o750)
    for path in (j(r, b"sub", b"file.txt"), j(r, b"empty"), j(r, b"sub", b"deeper")):
        os.utime(path, ns=(NS_MTIME, NS_MTIME))
    os.utime(j(r, b"rel-link"), ns=(NS_MTIME, NS_MTIME + 7), follow_symlinks=False)
    return r


def snapshot(root: str | bytes, with_dir_mtimes: bool = True) -> dict[bytes, tuple]:
    """Relative path -> (type, mode, uid, gid, mtime_ns, content hash / target, link group).

    Hard links are recorded as the sorted list of names sharing an inode, so two trees compare
    equal only if the same names are linked together.
    """
    root = os.fsencode(root)
    by_inode: dict[int, list[bytes]] = {}
    rows: dict[bytes, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
                by_inode.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = None
            mtime = st.st_mtime_ns if with_dir_mtimes or not stat.S_ISDIR(st.st_mode) else 0
            rows[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                         st.st_gid, mtime, content, st.st_ino)
    groups = {ino: tuple(sorted(names)) for ino, names in by_inode.items()}
    return {rel: (*row[:-1], groups.get(row[-1])) for rel, row in rows.items()}


def write_tree(root, files: dict[str, bytes]):
    """A directory holding the given files (name -> content); returns its path."""
    os.makedirs(root)
    for name, content in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
    return root
