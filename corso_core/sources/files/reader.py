"""Reading a directory tree for backup, safely.

Files are opened with O_NOFOLLOW | O_NONBLOCK and their type checked with fstat on the open
descriptor, so a file swapped for a symlink or a FIFO between listing and reading is neither
followed nor waited on. Sockets, FIFOs and devices are skipped with a warning.

O_NOFOLLOW guards only a path's last name: whoever can write the tree could swap a directory
on the way for a symlink to another (say to /etc), and a path through it would read there. So
a directory is listed through a descriptor opened with O_NOFOLLOW, which must be the very
directory its parent's listing saw (device and inode), and its entries are looked at through
that descriptor; a file opened later must be the one listed, too. One swapped in between is
reported as changed while being read, and left out.
"""

from __future__ import annotations

import fnmatch
import os
import stat

from corso_core.sources.source import DIR, FILE, SYMLINK, Metadata, Node, Report

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
REPLACED = "changed while being read (replaced by another)"
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


def _is(st: os.stat_result, meta: Metadata) -> bool:
    """Whether `st` is of the very file `meta` was taken from."""
    return (st.st_ino, st.st_dev) == (meta.inode, meta.dev)


class FileContent:
    """An open regular file, with the fstat taken when it was opened."""

    def __init__(self, fd: int, meta: Metadata) -> None:
        self.file = os.fdopen(fd, "rb", buffering=0)
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
        self.excludes = excludes
        self.report = report
        #: The filesystems of the paths given, when the walk stays on them: a directory on
        #: another (a mount point: /proc under /) is recorded, but not entered.
        self.filesystems: set[int] | None = set() if one_file_system else None

    def _excluded(self, path: bytes) -> bool:
        if not self.excludes:
            return False
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(path, g)
                   for g in self.excludes)

    def _node(self, name: bytes, path: bytes, dir_fd: int | None = None) -> Node | None:
        """The node at `path`: looked at by `name` in the directory open as `dir_fd` if given,
        else by path (a --path the user gave, symlinks on the way and all)."""
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
        return Node(name=name, meta=meta, handle=path)

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
            if not _is(os.fstat(fd), node.meta):
                self.report.error(node.handle, REPLACED)
                return []
            names = sorted(os.fsencode(name) for name in os.listdir(fd))
            found = []
            prefix = node.handle.rstrip(b"/") + b"/"
            for name in names:
                child_path = prefix + name
                if self._excluded(child_path):
                    continue
                child = self._node(name, child_path, fd)
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
            fd = os.open(node.handle, _OPEN_FLAGS)
        except OSError as e:
            self.report.error(node.handle, f"cannot open: {e.strerror}")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(0, "no longer a regular file")
            if not _is(st, node.meta):
                os.close(fd)
                self.report.error(node.handle, REPLACED)
                return None
            if st.st_size <= READ_IN_ON_OPEN:
                _read_in(fd)
            return FileContent(fd, metadata(st))
        except OSError as e:
            os.close(fd)
            self.report.error(node.handle, f"cannot read: {e.strerror}")
            return None
