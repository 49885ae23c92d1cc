"""Reading a directory tree for backup, safely.

Files are opened with O_NOFOLLOW | O_NONBLOCK and their type checked with fstat on the open
descriptor, so a file swapped for a symlink or a FIFO between listing and reading is neither
followed nor waited on. Sockets, FIFOs and devices are skipped with a warning.

O_NOFOLLOW guards only a path's last name: whoever can write the tree could swap a directory
on the way for a symlink to another (say to /etc), and a path through it would lead there. So
each node's handle carries the identity (device, inode) of the directory whose listing found
it. A directory is listed through a descriptor opened with O_NOFOLLOW whose ".." must be that
directory (".." of a mount's root is the mount point's parent: an automounted directory is
its mount, as before), its entries looked at through that descriptor; a file is opened by its
name in its directory, opened likewise and checked to be the one that listed it, so nothing
outside the tree is ever opened (a device's open can act), and a file saved by rename since
the listing is read as it is now. A directory swapped in between is reported as changed while
being read, and left out.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
import weakref
from typing import NamedTuple

from corso_core.sources.files.direct_reads import open_for_reading
from corso_core.sources.source import DIR, FILE, SYMLINK, Metadata, Node, Report

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
REPLACED = "changed while being read (a directory on its path was replaced)"


class _Handle(bytes):
    """A node's absolute path, and `parent`: the (device, inode) of the directory whose
    listing found it (None for a path the user gave)."""

    parent: tuple[int, int] | None = None

    @classmethod
    def of(cls, path: bytes, parent: tuple[int, int] | None) -> _Handle:
        handle = cls(path)
        handle.parent = parent
        return handle
#: A file up to this size is read in by the kernel as soon as it is opened (the engine opens
#: small files ahead of reading them, so the disk gets many requests at once).
READ_IN_ON_OPEN = 1024 * 1024
_SKIPPED_KINDS = {
    stat.S_IFSOCK: "a socket",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _read_in(fd: int) -> None:
    """Have the kernel read the file in now. Only a hint: where the system has no fadvise
    (macOS) or the filesystem refuses it, the file is simply read when its turn comes."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass


def metadata(st: os.stat_result, target: bytes = b"") -> Metadata | None:
    """Metadata of a regular file, directory or symlink; None for every other type."""
    if stat.S_ISREG(st.st_mode):
        kind = FILE
    elif stat.S_ISDIR(st.st_mode):
        kind = DIR
    elif stat.S_ISLNK(st.st_mode):
        kind = SYMLINK
    else:
        return None
    # Positional, in Metadata's field order: kind, mode, uid, gid, size, mtime_ns, ctime_ns,
    # inode, dev, nlink, target (one per item listed; twice as fast as by keyword).
    return Metadata(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                    st.st_size if kind == FILE else 0, st.st_mtime_ns, st.st_ctime_ns,
                    st.st_ino, st.st_dev, st.st_nlink, target)


def root_names(paths: list[bytes]) -> list[bytes]:
    """The name each --path gets at the top of the backup: its base name, and on a clash
    "NAME~2", "NAME~3"… in the order of the sorted absolute paths ("/" itself is "root")."""
    names: list[bytes] = []
    for path in paths:
        base = os.path.basename(path.rstrip(b"/")) or b"root"
        name, n = base, 1
        while name in names:
            n += 1
            name = base + b"~%d" % n
        names.append(name)
    return names


class _Exclude(NamedTuple):
    """An --exclude glob as matched, against a name or a whole path: `dirs/` matches
    directories only (as in .gitignore), and a relative glob holding a "/" (`build/tmp`)
    matches the end of a path too (a whole path, absolute, it could never match)."""

    globs: tuple[bytes, ...]
    dirs_only: bool

    @classmethod
    def of(cls, glob: bytes) -> _Exclude:
        dirs_only = glob.endswith(b"/") and glob.strip(b"/") != b""
        glob = glob.rstrip(b"/") if dirs_only else glob
        if b"/" in glob and not glob.startswith(b"/"):
            return cls((glob, b"*/" + glob), dirs_only)
        return cls((glob,), dirs_only)

    def matches(self, name: bytes, path: bytes) -> bool:
        return any(fnmatch.fnmatchcase(name, glob) or fnmatch.fnmatchcase(path, glob)
                   for glob in self.globs)


def _is_dir(name: bytes, dir_fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class _OpenDirectory:
    """A directory open (O_NOFOLLOW) and checked to be the one that listed the files opened
    in it; its descriptor is closed once nothing holds this."""

    def __init__(self, path: bytes, identity: tuple[int, int], fd: int) -> None:
        self.path, self.identity, self.fd = path, identity, fd
        weakref.finalize(self, os.close, fd)


class _LastDirectory(threading.local):
    """The directory each thread last opened a file in. A reader opens the files of a batch
    one after the other, most of them in one directory: its descriptor is kept from one to
    the next, not opened, checked and closed for every file (three system calls, and as many
    chances for another thread to take the GIL). A thread's entry goes when the thread ends,
    all of them when the reader does."""

    directory: _OpenDirectory | None = None


class FileContent:
    """An open regular file, with the fstat taken when it was opened."""

    def __init__(self, fd: int, meta: Metadata) -> None:
        self.file = open_for_reading(fd, meta.size)
        self.meta = meta

    def changed(self) -> str | None:
        now = os.fstat(self.file.fileno())
        if now.st_size != self.meta.size:
            return "changed while being read (size)"
        if now.st_mtime_ns != self.meta.mtime_ns or now.st_ctime_ns != self.meta.ctime_ns:
            return "changed while being read (mtime or ctime)"
        return None

    def close(self) -> None:
        self.file.close()


class FilesReader:
    """The nodes under the given absolute paths; a node's handle is its absolute path."""

    def __init__(self, paths: list[bytes], excludes: list[bytes], report: Report, *,
                 one_file_system: bool = False) -> None:
        self.paths = sorted(paths)
        self.excludes = [_Exclude.of(glob) for glob in excludes]
        self.report = report
        #: The filesystems of the paths given, when the walk stays on them: a directory on
        #: another (a mount point: /proc under /) is recorded, but not entered.
        self.filesystems: set[int] | None = set() if one_file_system else None
        self._last_directory = _LastDirectory()

    def _excluded(self, path: bytes, dir_fd: int) -> bool:
        if not self.excludes:
            return False
        name = os.path.basename(path)
        return any(e.matches(name, path) and (not e.dirs_only or _is_dir(name, dir_fd))
                   for e in self.excludes)

    def _node(self, name: bytes, path: bytes, dir_fd: int | None = None,
              parent: tuple[int, int] | None = None) -> Node | None:
        """The node at `path`: looked at by `name` in the directory open as `dir_fd` (whose
        identity is `parent`) if given, else by path (a --path the user gave, symlinks on the
        way and all)."""
        where = path if dir_fd is None else name
        try:
            st = os.stat(where, dir_fd=dir_fd, follow_symlinks=False)
            target = os.readlink(where, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else b""
        except OSError as e:
            self.report.error(path, f"cannot read: {e.strerror}")
            return None
        meta = metadata(st, target)
        if meta is None:
            what = _SKIPPED_KINDS.get(stat.S_IFMT(st.st_mode), "an unsupported file type")
            self.report.warning(path, f"skipped: {what}")
            return None
        return Node(name=name, meta=meta, handle=_Handle.of(path, parent))

    def roots(self) -> list[Node]:
        found = (self._node(n, p) for n, p in zip(root_names(self.paths), self.paths, strict=True))
        roots = [n for n in found if n is not None]
        if self.filesystems is not None:
            self.filesystems.update(n.meta.dev for n in roots)
        return roots

    def children(self, node: Node) -> list[Node]:
        if self.filesystems is not None and node.meta.dev not in self.filesystems:
            return []
        try:
            fd = os.open(node.handle, _DIR_FLAGS)
        except OSError as e:
            self.report.error(node.handle, f"cannot list directory: {e.strerror}")
            return []
        try:
            parent = getattr(node.handle, "parent", None)
            if parent is not None and _identity(
                    os.stat(b"..", dir_fd=fd, follow_symlinks=False)) != parent:
                self.report.error(node.handle, REPLACED)
                return []
            names = sorted(os.fsencode(name) for name in os.listdir(fd))
            identity = _identity(os.fstat(fd))
            found = []
            prefix = node.handle.rstrip(b"/") + b"/"
            for name in names:
                child_path = prefix + name
                if self._excluded(child_path, fd):
                    continue
                child = self._node(name, child_path, fd, identity)
                if child is not None:
                    found.append(child)
            return found
        except OSError as e:
            self.report.error(node.handle, f"cannot list directory: {e.strerror}")
            return []
        finally:
            os.close(fd)

    def open(self, node: Node) -> FileContent | None:
        try:
            fd = self._open_in_its_directory(node.handle)
        except OSError as e:
            self.report.error(node.handle, f"cannot open: {e.strerror}")
            return None
        if fd is None:
            self.report.error(node.handle, REPLACED)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(0, "no longer a regular file")
            if st.st_size <= READ_IN_ON_OPEN:
                _read_in(fd)
            return FileContent(fd, metadata(st))
        except OSError as e:
            os.close(fd)
            self.report.error(node.handle, f"cannot read: {e.strerror}")
            return None

    def _open_in_its_directory(self, handle: bytes) -> int | None:
        """The file open by its name in the directory that listed it; None if the path now
        leads to another directory (one on the way was swapped)."""
        parent = getattr(handle, "parent", None)
        if parent is None:  # a path the user gave
            return os.open(handle, _OPEN_FLAGS)
        directory_path, name = os.path.split(handle)
        directory = self._last_directory.directory
        if directory is None or (directory.path, directory.identity) != (directory_path, parent):
            self._last_directory.directory = None  # closes the one before
            # The slash follows a directory given as `--path link/` (whose files' paths pass
            # through the link); any other symlink it follows fails the identity check below.
            dir_fd = os.open(directory_path + b"/", _DIR_FLAGS)
            try:
                listed_it = _identity(os.fstat(dir_fd)) == parent
            except OSError:
                os.close(dir_fd)
                raise
            if not listed_it:
                os.close(dir_fd)
                return None
            directory = _OpenDirectory(directory_path, parent, dir_fd)
            self._last_directory.directory = directory
        return os.open(name, _OPEN_FLAGS, dir_fd=directory.fd)
