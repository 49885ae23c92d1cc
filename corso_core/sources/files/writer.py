"""Writing a restored tree into a destination directory, never outside it.

Every operation goes through directory descriptors opened with O_NOFOLLOW from the destination
down, so a symlink already in the destination (say `a -> /etc`) is never followed, whatever the
collision policy. Names holding "/", NUL, "." or ".." are refused. Nothing appears under its
own name before it is complete, with its metadata; a file whose content fails authentication is
never made visible:
- a directory this restore makes in an existing one takes its name at once (an empty 0700
  directory, so that the collision policy is settled then) but is built apart, under a temp
  name in a staging directory, and moved onto that name once all below it is finished (or the
  restore stops: Ctrl-C, SIGTERM, a full disk). Inside it, nobody sees anything meanwhile:
  items are made under their own names, without a temp and a link each (15,000 files: 0.3 s
  of a 2.5 s restore). After a SIGKILL, what it held stays in the staging directory until the
  next restore into the same destination removes it (leftovers.py);
- in an existing directory, an item is made under a temp name and linked into place.
Another restore meanwhile into the same destination, or into one below or above it, would
enter the empty directory holding a name and fill it: it is refused (destination_lock.py).

Collision policies, for a name already present in the destination:
- skip: leave what is there (an existing directory is entered; its metadata is kept, its
  times too: set back once the restore has added to it);
- copy: restore beside it as "NAME.restored" ("NAME.restored-2", …);
- replace: replace files and symlinks (the link itself, atomically, by rename); an existing
  directory in the way of a file is reported, never deleted.

Files may be written from several threads, a file by two at once at different offsets (the
first to get there creates it): every thread keeps its own cache of open descriptors, so no
thread ever closes a descriptor another uses, sized from the open-files limit (ulimit -n).

Whoever else can write a directory of the destination (a restore into a shared place) could
swap what the restore opens by name there. So items are made only where nobody else can
write: under their own names in a directory this restore made (built apart, 0700 until it is
finished), and in an existing directory under a temp name in a staging directory the restore
makes in it (0700, so on the same filesystem: a link or a move cannot cross one; removed
before the directory gets its metadata), then linked (a directory: moved) into place; a
directory is the same one each time it is opened again, and the file a hard link is made to
is the one restored.

An existing directory of the user's that the restore cannot work in, as a first restore may
have left it (mode 000 or 0100: it cannot be listed; 0555: nothing can be made in it; 0600: no
name in it can be looked up), is given u+rwx for the restore, and its mode back once it is
finished (or the restore stops). That shows as EACCES where the restore opens it, makes
something in it (its staging directory, a directory, or removes a file to replace it), or, for
one without u+x, at once on opening it (which succeeds): each of those opens it up (_open_up)
and tries again. Someone else's stays refused.

A full destination (no space left, or the disk quota exceeded) is not reported item by item:
the OSError goes up, naming the item, and the restore stops.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import resource
import secrets
import stat
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from corso_core.sources.files.destination_lock import DestinationLock
from corso_core.sources.files.leftovers import StagingList, remove_leftovers
from corso_core.sources.files.repository_guard import holds_repository
from corso_core.sources.source import DIR, ITEM_ERRORS, Metadata, Report, no_space, reason

Path = tuple[bytes, ...]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_PREFIX = b".corso-restore-"
_MAX_OPEN = 64  # descriptors one thread keeps open, at most
_MIN_OPEN = 2
#: Threads that write at once, each with its own descriptors: the restore's and the store's
#: two readers (engine/restore.py).
_WRITING_THREADS = 3
_NAME_MAX = 255  # bytes in one name, on Linux's filesystems
#: What a filesystem without owners or hard links answers.
_NOT_SUPPORTED = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}


def _others_can_rename_in(parent: os.stat_result) -> bool:
    """Whether users other than its owner may replace entries of a directory: group- or
    other-writable, without the sticky bit (which keeps /tmp's entries to their owners)."""
    return bool(parent.st_mode & 0o022) and not parent.st_mode & stat.S_ISVTX


def _remove_item(dir_fd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # renamed into place, or never made


def _make(create, finish, dir_fd: int, name: bytes) -> None:
    """`create(dir_fd, name)` makes the item, `finish(dir_fd, name)` completes it; nothing is
    left behind when that fails (its metadata refused, say), and nothing removed but what
    `create` made."""
    create(dir_fd, name)
    try:
        finish(dir_fd, name)
    except BaseException:
        _remove_item(dir_fd, name)
        raise


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _cache_size() -> int:
    """Descriptors each thread keeps open: all threads' together take at most a quarter of the
    files the process may have open (ulimit -n), as backup's readers do; the rest is for the
    repository's, the store's and Python's own."""
    limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limit == resource.RLIM_INFINITY:
        return _MAX_OPEN
    return max(_MIN_OPEN, min(_MAX_OPEN, limit // 4 // _WRITING_THREADS))


def _discarded() -> OSError:
    return FileNotFoundError(errno.ENOENT, "Discarded")


def bad_name(name: bytes) -> bool:
    return name in (b"", b".", b"..") or b"/" in name or b"\0" in name


class _NewFiles(NamedTuple):
    """What a file created in a directory gets: the group (the directory's if it is
    set-group-ID), and whether the mode asked for less the umask (no default ACL)."""

    gid: int
    mode_as_asked: bool


def _umask() -> int:
    """The process's umask, from /proc (Linux 4.7+): setting it to read it would change it,
    for an instant, for every thread of the process. Without /proc, that way."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _default_acl(dir_fd: int) -> bool:
    """Whether a directory has a default ACL, which replaces the umask for what is made in it."""
    try:
        os.getxattr(dir_fd, "system.posix_acl_default")
    except OSError:  # ENODATA: none; ENOTSUP: a filesystem without ACLs
        return False
    return True


#: The locks a file's first writers wait on (PendingFile.creating), each shared by many files:
#: one lock per file was ~50 bytes more per file, in a restore that holds them all at once.
#: Nothing takes two of them at a time.
_CREATION_LOCKS = tuple(threading.Lock() for _ in range(64))


@dataclass(slots=True)
class PendingFile:
    path: Path
    meta: Metadata
    key: int  # unique in this restore: it keys the file's descriptors
    name: bytes  # made as: its own name in a directory this restore made, else a temp name
    created: bool = False
    owner_as_made: bool = False  # created with the backup's owner and group
    mode_as_made: bool = False  # created with the backup's mode
    dropped: bool = False  # discarded: never created (again) by a late writer

    @property
    def creating(self) -> threading.Lock:
        """What the first writers wait on while one of them creates the file."""
        return _CREATION_LOCKS[self.key % len(_CREATION_LOCKS)]


class FilesWriter:
    def __init__(self, destination: bytes, collisions: str, report: Report) -> None:
        self.root_fd = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._lock = DestinationLock(destination)
        try:
            self._lock.take(self.root_fd)  # before anything is done
        except BaseException:
            os.close(self.root_fd)
            raise
        self.destination = destination
        self.collisions = collisions
        self.report = report
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.as_root = self.euid == 0
        self._umask = _umask()
        self._new_files: dict[Path, _NewFiles] = {}  # by directory opened
        self._local = threading.local()
        self._cache_size = _cache_size()
        self._caches: list[OrderedDict[object, int]] = []  # every thread's, to close them all
        self._caches_lock = threading.Lock()
        self._renamed: dict[Path, bytes] = {}  # items restored under another name ("copy")
        self._ours: set[Path] = set()  # directories this restore created or replaced
        # Existing directories entered (skip, copy): their (atime, mtime) to set back at the end
        self._kept_times: dict[Path, tuple[int, int]] = {}
        # Directories this restore created, empty then and seen by nobody else: a name in one
        # needs no look first, and nothing in one needs a temp.
        self._made: set[Path] = set()
        # Directories made in existing ones, built in the staging directory: their name there.
        self._apart: dict[Path, bytes] = {}
        self._sound_parents: set[Path] = set()  # parents whose names were checked
        # Temp names: one random part per restore (nobody can guess them ahead), then a count.
        self._temp_prefix = _TEMP_PREFIX + secrets.token_hex(8).encode() + b"-"
        self._temp_numbers = itertools.count()
        self._warned_owner = False
        self._warned_special = False
        self._dir_ids: dict[Path, tuple[int, int]] = {}  # (st_dev, st_ino) of each directory
        self._file_ids: dict[Path, tuple[int, int]] = {}  # hard-link sources in existing dirs
        self._staging = self._temp_prefix + b"staging"  # its name in each existing directory
        self._staged: set[Path] = set()  # existing directories holding a staging directory
        # Those whose staging directory may be there: each is in it before its mkdir, so a
        # signal (Stopped) just after the mkdir cannot keep it from close()'s removal.
        self._maybe_staged: set[Path] = set()
        self._staging_lock = threading.Lock()
        self._opened_up: dict[Path, int] = {}  # existing directories given u+rwx: their mode
        self._opening_up = threading.Lock()
        # Where this restore makes staging directories, for the next one to remove them should
        # it be killed outright; and the removal of those of restores killed here before.
        self._staging_list = StagingList(self.root_fd, self._temp_prefix)
        remove_leftovers(self.root_fd, lambda path, message: self._say(path, message, False))

    # --- descriptors --------------------------------------------------------------------

    @property
    def _fds(self) -> OrderedDict[object, int]:
        """This thread's few open descriptors, least recently used first."""
        cache = getattr(self._local, "fds", None)
        if cache is None:
            cache = self._local.fds = OrderedDict()
            with self._caches_lock:
                self._caches.append(cache)
        return cache

    @property
    def _held(self) -> list[int]:
        """This thread's descriptors a caller still uses while it opens others."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = []
        return held

    @contextmanager
    def _holding(self, *fds: int):
        """Keep `fds` open meanwhile: opening a directory far away (a hard link's source)
        opens its parents too, which would push out of a small cache any descriptor older."""
        held = self._held
        held.extend(fds)
        try:
            yield
        finally:
            for fd in fds:
                held.remove(fd)

    def _cached(self, key: object, opener, argument) -> int:
        """The descriptor cached as `key`, else `opener(argument)`'s, cached then."""
        fds = self._fds
        fd = fds.get(key)
        if fd is None:
            fd = fds[key] = opener(argument)
            if len(fds) > self._cache_size:
                self._close_least_used(fds)
        else:
            fds.move_to_end(key)
        return fd

    def _close_least_used(self, fds: OrderedDict[object, int]) -> None:
        """Close the least recently used descriptors beyond the cache's size, but for those
        held and the one just opened."""
        held, newest = self._held, next(reversed(fds))
        excess = len(fds) - self._cache_size
        unused = []
        for key, fd in fds.items():  # oldest first: usually the first one will do
            if len(unused) == excess:
                break
            if key != newest and fd not in held:
                unused.append(key)
        for key in unused:
            os.close(fds.pop(key))

    def _forget(self, key: object) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            os.close(fd)

    def _actual(self, path: Path) -> bytes:
        return self._renamed.get(path, path[-1])

    def _dir_fd(self, path: Path) -> int:
        """Descriptor of a restored directory, reached without following any symlink."""
        if not path:
            return self.root_fd
        return self._cached(("dir", path), self._open_dir, path)

    def _open_dir(self, path: Path) -> int:
        """Open a directory by name, and check it is the one it was: a directory swapped in
        by whoever else can write its parent is refused (as is, first, one in place of a
        staging directory this restore just made, where others could have swapped it: owned
        by someone else)."""
        if path in self._apart:
            parent_fd, name = self._temp_fd(path[:-1]), self._apart[path]
        else:
            parent_fd, name = self._dir_fd(path[:-1]), self._actual(path)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except PermissionError:  # 000, 0100: opened up through a descriptor needing no right
            locked = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=parent_fd)
            try:
                if not self._open_up(path, locked):
                    raise
                fd = os.open(f"/proc/self/fd/{locked}", _DIR_FLAGS & ~os.O_NOFOLLOW)
            finally:
                os.close(locked)
        try:
            st = os.fstat(fd)
            if (not st.st_mode & stat.S_IXUSR and st.st_uid == self.euid
                    and not self._may_look_up_in(fd)):  # 0600: opened, yet of no use
                self._open_up(path, fd)
            if (path in self._made and path not in self._dir_ids and st.st_uid != self.euid
                    and _others_can_rename_in(os.fstat(parent_fd))):
                raise OSError(errno.EPERM, "Replaced during the restore")
            if self._dir_ids.setdefault(path, (st.st_dev, st.st_ino)) != (st.st_dev, st.st_ino):
                raise OSError(errno.ESTALE, "Replaced during the restore")
            self._new_files[path] = _NewFiles(
                st.st_gid if st.st_mode & stat.S_ISGID else self.egid, not _default_acl(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _may_look_up_in(fd: int) -> bool:
        """Whether names in a directory may be looked up (searched, u+x: its owner may not
        without it, unless privileged)."""
        try:
            os.stat(b".", dir_fd=fd, follow_symlinks=False)  # a lookup in it, as any other
        except PermissionError:
            return False
        return True

    def _open_up(self, path: Path, fd: int) -> bool:
        """Give an existing directory of the user's that the restore was refused to work in
        u+rwx for the restore (its mode is given back by _close_up: finish_dir, or close), on
        the very inode `fd` is (any descriptor of it, O_PATH too, which needs no right on it).
        True once it is opened up, by this thread or by another (several may be refused at
        once: one chmod). False, nothing done, the refusal standing, for one of someone
        else's, one this restore made, one that has u+rwx already (refused for another
        reason), or the destination itself (the user's choice, opened as it is, as in
        __init__)."""
        with self._opening_up:
            if path in self._opened_up:
                return True
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if (not path or path in self._made or st.st_uid != self.euid
                    or mode & stat.S_IRWXU == stat.S_IRWXU):
                return False
            os.chmod(f"/proc/self/fd/{fd}", mode | stat.S_IRWXU)
            self._opened_up[path] = mode
            return True

    def _in(self, parent: Path, fd: int, act) -> None:
        """`act(fd)`: make (or remove) something in the directory `parent` (`fd`); refused,
        then again once the directory is opened up (_open_up), if it is one of the user's
        (0555, say: it could be opened, not written)."""
        try:
            act(fd)
        except PermissionError:
            if not self._open_up(parent, fd):
                raise
            act(fd)

    def _close_up(self, path: Path) -> None:
        """Give a directory opened up for the restore its mode back (nothing is done in it
        after this: it may not even be entered)."""
        mode = self._opened_up.pop(path, None)
        if mode is None:
            return
        try:
            os.fchmod(self._dir_fd(path), mode)
        except ITEM_ERRORS as e:
            self._say(path, f"mode not set back to {mode:04o}: {reason(e)}")
        self._forget(("dir", path))

    def _work_dir(self, parent: Path) -> Path:
        """Where the items of a directory are made before they are in place: in it if this
        restore made it, else in the staging directory made in it (made by this restore,
        too)."""
        if parent in self._made:
            return parent
        staging = (*parent, self._staging)
        if parent not in self._staged:
            with self._staging_lock:
                if parent not in self._staged:
                    self._staging_list.add_pending(parent)
                    self._maybe_staged.add(parent)
                    self._in(parent, self._dir_fd(parent),
                             lambda fd: os.mkdir(self._staging, 0o700, dir_fd=fd))
                    self._made.add(staging)
                    self._staged.add(parent)
                    self._staging_list.add(parent, self._dir_fd(staging))
        return staging

    def _temp_fd(self, parent: Path) -> int:
        return self._dir_fd(self._work_dir(parent))

    def _remove_staging(self, only: Path | None = None) -> None:
        """Remove the staging directories (or the one in `only`), empty by now (a temp left
        by a failure: said)."""
        with self._staging_lock:
            if only is None:
                maybe, self._maybe_staged = self._maybe_staged, set()
            elif only in self._maybe_staged:
                maybe = {only}
                self._maybe_staged.discard(only)
            else:
                return
            made = maybe & self._staged
            self._staged -= maybe
        for parent in maybe:
            self._forget(("dir", (*parent, self._staging)))
            self._dir_ids.pop((*parent, self._staging), None)  # a new one may come later
            try:
                os.rmdir(self._staging, dir_fd=self._dir_fd(parent))
            except OSError as e:  # one not known to be made: its mkdir failed, and said so
                if parent in made:
                    self._say((*parent, self._staging), f"not removed: {e.strerror}",
                              error=False)

    def _stop_if_full(self, path: Path, error: Exception) -> None:
        """A full destination fails every item after this one the same way: raise it (naming
        the item) to stop the restore, rather than report it."""
        if no_space(error):
            raise OSError(error.errno, error.strerror, self.shown(path)) from None

    def _say(self, path: Path, message: str, error: bool = True) -> None:
        (self.report.error if error else self.report.warning)(self.shown(path), message)

    def _refused(self, path: Path) -> bool:
        """Whether a name of the path is not a plain file name (reported)."""
        parent = path[:-1]
        if bad_name(path[-1]) or (parent not in self._sound_parents
                                  and any(bad_name(n) for n in parent)):
            self._say(path, "refused: the name is not a plain file name")
            return True
        self._sound_parents.add(parent)
        return False

    def _checked_parent(self, path: Path) -> int | None:
        """The parent's descriptor, or None (reported) for a refused name or unusable parent."""
        if self._refused(path):
            return None
        parent = path[:-1]
        try:
            return self._dir_fd(parent)
        except OSError as e:
            self._say(path, f"cannot enter its directory: {e.strerror}")
            return None

    @staticmethod
    def _lstat(fd: int, name: bytes) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _free_name(self, fd: int, name: bytes) -> bytes:
        """NAME.restored, NAME.restored-2, …: the first that is free, NAME shortened if the
        suffix would take it past the 255 bytes a name may have."""
        n = 1
        while True:
            suffix = b".restored" if n == 1 else b".restored-%d" % n
            cut = min(len(name), _NAME_MAX - len(suffix))
            while 0 < cut < len(name) and name[cut] & 0xC0 == 0x80:
                cut -= 1  # not inside a UTF-8 character
            candidate = name[:cut] + suffix
            if self._lstat(fd, candidate) is None:
                return candidate
            n += 1

    def _apply(self, meta: Metadata, fd: int | None = None, at: tuple[int, bytes] | None = None):
        """Owner (as root), mode and mtime, on a descriptor or (for symlinks) a name."""
        if at is None:
            self._chown(os.fchown, fd, meta)
            os.fchmod(fd, self._mode(meta, fd))
            os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
        else:
            dir_fd, name = at
            self._chown(os.chown, name, meta, dir_fd=dir_fd, follow_symlinks=False)
            os.utime(name, ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=dir_fd,
                     follow_symlinks=False)

    def _mode(self, meta: Metadata, fd: int) -> int:
        """The backup's mode, but that a file whose owner (group) was not restored loses its
        set-user-ID (set-group-ID) bit, as cp -p and tar do: else it would run as whoever
        restored it. A directory keeps both: they give no privilege there (set-group-ID only
        hands the directory's group on to new entries)."""
        if not meta.mode & (stat.S_ISUID | stat.S_ISGID) or meta.kind == DIR:
            return meta.mode
        st = os.fstat(fd)
        dropped = (stat.S_ISUID if st.st_uid != meta.uid else 0) | (
            stat.S_ISGID if st.st_gid != meta.gid else 0)
        if meta.mode & dropped and not self._warned_special:
            self._warned_special = True
            self.report.warning(self.destination, "setuid/setgid bits dropped from files "
                                                  "whose owner or group was not restored")
        return meta.mode & ~dropped

    def _chown(self, chown, target, meta: Metadata, **kwargs) -> None:
        """Restore the owner when running as root, where the filesystem has owners at all
        (FAT and some network filesystems refuse: the content still comes back)."""
        if not self.as_root:
            return
        try:
            chown(target, meta.uid, meta.gid, **kwargs)
        except OSError as e:
            if e.errno not in _NOT_SUPPORTED:
                raise
            if not self._warned_owner:
                self._warned_owner = True
                # EPERM also comes from a root without CAP_CHOWN (a container, a user
                # namespace): the filesystem is not always the one to blame.
                self.report.warning(self.destination, f"owners not restored: {e.strerror} "
                                    "(a filesystem without owners, or a root without the "
                                    "right to give files away)")

    def _place(self, temp_fd: int, temp: bytes, fd: int, path: Path) -> bool | None:
        """Give the finished temp item (in `temp_fd`) its name in the directory `fd`, under
        the collision policy (whether it got it, as SourceWriter says)."""
        try:
            return self._link_into_place(temp_fd, temp, fd, path)
        finally:
            _remove_item(temp_fd, temp)

    def _link_into_place(self, temp_fd: int, temp: bytes, fd: int, path: Path) -> bool | None:
        """Link first, look only when the name is taken: a restore into an empty destination
        costs no lookup per item."""
        name = path[-1]
        target = name
        while True:
            try:
                self._link_new(temp_fd, temp, fd, target)
            except FileExistsError:
                if target == name and self.collisions != "copy":
                    existing = self._lstat(fd, name)
                    if existing is None:
                        continue  # gone since: try again
                    if self.collisions == "skip":
                        return None
                    if stat.S_ISDIR(existing.st_mode):
                        self._say(path, "not replaced: a directory is in the way")
                        return False
                    os.rename(temp, name, src_dir_fd=temp_fd, dst_dir_fd=fd)
                    return True
                target = self._free_name(fd, name)  # taken (perhaps since we looked): again
                continue
            if target != name:
                self._renamed[path] = target
            return True

    def _link_new(self, temp_fd: int, temp: bytes, fd: int, target: bytes) -> None:
        """A hard link `target` to `temp`, FileExistsError if the name is taken, however
        recently. Without hard links (FAT, some FUSE): a rename after a look, which would
        replace a name that appeared in the instant since."""
        try:
            os.link(temp, target, src_dir_fd=temp_fd, dst_dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            if e.errno not in _NOT_SUPPORTED:
                raise
            if self._lstat(fd, target) is not None:
                raise FileExistsError(errno.EEXIST, "File exists", target) from None
            os.rename(temp, target, src_dir_fd=temp_fd, dst_dir_fd=fd)

    def _temp_name(self, number: int | None = None) -> bytes:
        return self._temp_prefix + b"%d" % (next(self._temp_numbers) if number is None
                                            else number)

    def _put_in_place(self, path: Path) -> None:
        """Move a directory built apart onto its name (taken, empty, since it was made). A
        name someone filled meanwhile is left as it is: the error says where the restored
        directory stays."""
        built = self._apart.pop(path)
        try:
            fd = self._dir_fd(path[:-1])
            with self._holding(fd):  # opening the staging directory cannot close it
                os.rename(built, self._actual(path), src_dir_fd=self._temp_fd(path[:-1]),
                          dst_dir_fd=fd)
        except ITEM_ERRORS as e:
            where = os.path.join(self.destination, *path[:-1], self._staging, built)
            self._say(path, f"not put in place: {reason(e)}; restored as {os.fsdecode(where)}")

    # --- the SourceWriter interface -----------------------------------------------------

    def shown(self, path: Path) -> bytes:
        return os.path.join(self.destination, *path)

    def make_dir(self, path: Path, meta: Metadata) -> bool | None:
        fd = self._checked_parent(path)
        if fd is None:
            return False
        try:
            existing = self._lstat(fd, path[-1])
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                if self._is_repository(fd, path):
                    self._say(path, "not restored: a corso repository is there")
                    return False
                if self.collisions == "replace":
                    self._ours.add(path)
                else:
                    self._kept_times[path] = (existing.st_atime_ns, existing.st_mtime_ns)
                return True
            if existing is not None:
                if self.collisions == "skip":
                    return None
                if self.collisions == "copy":
                    self._renamed[path] = self._free_name(fd, path[-1])
                else:
                    self._in(path[:-1], fd, lambda fd: os.unlink(path[-1], dir_fd=fd))
            self._in(path[:-1], fd, lambda fd: os.mkdir(self._actual(path), 0o700, dir_fd=fd))
            if path[:-1] not in self._made:
                self._build_apart(path, fd)
            self._ours.add(path)
            self._made.add(path)
            return True
        except ITEM_ERRORS as e:
            self._stop_if_full(path, e)
            self._say(path, f"cannot create directory: {reason(e)}")
            return False

    def _is_repository(self, fd: int, path: Path) -> bool:
        """Whether the existing directory `path` (in `fd`) is a corso repository's."""
        try:
            dir_fd = os.open(path[-1], _DIR_FLAGS, dir_fd=fd)
        except OSError:
            return False  # entering it fails, and says why, as before
        try:
            return holds_repository(dir_fd)
        finally:
            os.close(dir_fd)

    def _build_apart(self, path: Path, fd: int) -> None:
        """Make the directory that stands for `path` (just made, empty, in `fd`) until it is
        put in place; without it, `path` is not kept either."""
        built = self._temp_name()
        try:
            reserved = os.open(self._actual(path), _DIR_FLAGS, dir_fd=fd)
            try:
                self._staging_list.add_reserved((*path[:-1], self._actual(path)), reserved)
            finally:
                os.close(reserved)
            temp_fd = self._temp_fd(path[:-1])
            # Known before it is made: a stop (Ctrl-C) as the mkdir returns finds it here.
            self._apart[path] = built
            os.mkdir(built, 0o700, dir_fd=temp_fd)
        except BaseException:
            if self._apart.pop(path, None) is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(built, dir_fd=temp_fd)
            os.rmdir(self._actual(path), dir_fd=fd)
            raise

    def finish_dir(self, path: Path, meta: Metadata) -> None:
        # Deepest first: all below is finished, and in place if it was built apart here.
        self._remove_staging(only=path)  # before the mtime is set: removing it changes it
        if path not in self._ours:
            self._keep_times(path)
            self._close_up(path)
            return
        self._opened_up.pop(path, None)  # the backup's mode, below
        try:
            fd = self._dir_fd(path)
            with self._holding(fd):
                if path in self._apart:  # before the mode, which may deny what a move needs
                    self._put_in_place(path)
                self._apply(meta, fd=fd)
        except ITEM_ERRORS as e:
            self._say(path, f"cannot set metadata: {reason(e)}")
        self._forget(("dir", path))

    def _keep_times(self, path: Path) -> None:
        """An existing directory's times, as they were before the restore added to it."""
        kept = self._kept_times.pop(path, None)
        if kept is None:
            return
        try:
            fd = self._dir_fd(path)
            if os.fstat(fd).st_mtime_ns != kept[1]:
                os.utime(fd, ns=kept)
        except ITEM_ERRORS as e:
            self._say(path, f"cannot set its modification time back: {reason(e)}")
        self._forget(("dir", path))

    def _left_alone(self, fd: int, path: Path) -> bool:
        """Whether "skip" keeps a name already there, looked up before any temp is made (a
        temp made and removed would still change the directory's mtime). In a directory this
        restore made, nothing is there to look up."""
        return (self.collisions == "skip" and path[:-1] not in self._made
                and self._lstat(fd, path[-1]) is not None)

    def _create_and_place(self, path: Path, what: str, create, finish) -> bool | None:
        """`create(dir_fd, name)` and `finish(dir_fd, name)` make the item (see _make): under
        its own name in a directory this restore made, else under a temp name, then
        placed."""
        fd = self._checked_parent(path)
        if fd is None:
            return False
        try:
            if path[:-1] in self._made:
                with self._holding(fd):
                    _make(create, finish, fd, path[-1])
                return True
            if self._left_alone(fd, path):
                return None
            temp = self._temp_name()
            with self._holding(fd):
                temp_fd = self._temp_fd(path[:-1])
                with self._holding(temp_fd):
                    _make(create, finish, temp_fd, temp)
                    return self._place(temp_fd, temp, fd, path)
        except ITEM_ERRORS as e:
            self._stop_if_full(path, e)
            self._say(path, f"cannot create {what}: {reason(e)}")
            return False

    def make_symlink(self, path: Path, meta: Metadata) -> bool | None:
        def create(fd: int, name: bytes) -> None:
            os.symlink(meta.target, name, dir_fd=fd)

        def finish(fd: int, name: bytes) -> None:
            self._apply(meta, at=(fd, name))

        return self._create_and_place(path, "symlink", create, finish)

    def start_file(self, path: Path, meta: Metadata) -> PendingFile | bool | None:
        """Check the name and the collision policy; the file is created on first use: under its
        own name in a directory this restore made (nothing there to look up, and its
        descriptor is opened only then), else under a temp name."""
        made_here = path[:-1] in self._made
        if made_here:
            if self._refused(path):
                return False
        else:
            fd = self._checked_parent(path)
            if fd is None:
                return False
            try:
                if self._left_alone(fd, path):
                    return None
            except ITEM_ERRORS as e:  # a name too long, say
                self._say(path, f"cannot create file: {reason(e)}")
                return False
        key = next(self._temp_numbers)
        return PendingFile(path=path, meta=meta, key=key,
                           name=path[-1] if made_here else self._temp_name(key))

    def _file_fd(self, pending: PendingFile) -> int:
        return self._cached(("file", pending.key), self._open_file, pending)

    def _open_file(self, pending: PendingFile) -> int:
        """A new descriptor of the file; the first thread to ask creates it."""
        where = self._work_dir(pending.path[:-1])
        dir_fd = self._dir_fd(where)
        if not pending.created:
            fd = self._create(pending, where, dir_fd)
            if fd is not None:
                return fd
        if pending.dropped:
            raise _discarded()
        return os.open(pending.name, _FILE_FLAGS, dir_fd=dir_fd)

    def _create(self, pending: PendingFile, where: Path, dir_fd: int) -> int | None:
        """Create the file (None if another thread just did; one discarded meanwhile stays
        gone), with its backup's mode and owner where creating gives them (two system calls
        less per file than setting them after: 0.2 s of CPU in 15,000 files); else 0600
        until finished."""
        with pending.creating:
            if pending.dropped:
                raise _discarded()
            if pending.created:
                return None
            fd = self._create_new(pending, where, dir_fd)
            pending.created = True
            return fd

    def _create_new(self, pending: PendingFile, where: Path, dir_fd: int) -> int:
        meta, new = pending.meta, self._new_files[where]
        pending.owner_as_made = meta.uid == self.euid and meta.gid == new.gid
        # (Owner-writable, or as root: a second thread may open it again to write.)
        pending.mode_as_made = (new.mode_as_asked and not meta.mode & (0o7000 | self._umask)
                                and (self.as_root or meta.mode & stat.S_IWUSR))
        mode = meta.mode if pending.mode_as_made else 0o600
        return os.open(pending.name, _FILE_FLAGS | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)

    def write(self, pending: PendingFile, offset: int, data: bytes | memoryview) -> None:
        try:
            _write_all(self._file_fd(pending), data, offset)
        except OSError as e:
            self._stop_if_full(pending.path, e)
            raise

    def write_file(self, pending: PendingFile, data: bytes | memoryview) -> bool | None:
        """In a directory this restore made: create, write, finish and close at once, its
        descriptor never cached (the cache's bookkeeping, twice per file, was 4 % of a
        15,000-file restore). Elsewhere: write, then finish_file."""
        parent = pending.path[:-1]
        if parent not in self._made:
            self.write(pending, 0, data)
            return self.finish_file(pending)
        try:
            fd = self._create(pending, parent, self._dir_fd(parent))  # its only writer
            try:
                _write_all(fd, data, 0)
            except BaseException:
                os.close(fd)
                raise
        except OSError as e:
            self._stop_if_full(pending.path, e)
            raise
        try:
            self._set_metadata(pending, fd)
        except ITEM_ERRORS as e:
            return self._finish_failed(pending, e)
        finally:
            os.close(fd)
        return True

    def _set_metadata(self, pending: PendingFile, fd: int) -> None:
        meta = pending.meta
        if not pending.owner_as_made:
            self._chown(os.fchown, fd, meta)
        if not pending.mode_as_made:
            os.fchmod(fd, self._mode(meta, fd))
        os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))

    def _finish_failed(self, pending: PendingFile, error: Exception) -> bool:
        self._stop_if_full(pending.path, error)
        self._say(pending.path, f"cannot finish file: {reason(error)}")
        self.discard_file(pending)
        return False

    def finish_file(self, pending: PendingFile) -> bool | None:
        parent = pending.path[:-1]
        try:
            fd = self._file_fd(pending)
            self._set_metadata(pending, fd)
            if pending.meta.nlink > 1 and parent not in self._made:
                st = os.fstat(fd)  # what link() checks its source against
                self._file_ids[pending.path] = (st.st_dev, st.st_ino)
            self._forget(("file", pending.key))
            if parent in self._made:
                return True  # made under its own name
            # The directory first: the temp's (itself, or its staging directory) then opens at
            # most one descriptor more, which cannot push it out of the cache. (A hold here
            # cost ~0.15 s of CPU in a 15,000-file restore.)
            fd = self._dir_fd(parent)
            return self._place(self._temp_fd(parent), pending.name, fd, pending.path)
        except ITEM_ERRORS as e:
            return self._finish_failed(pending, e)

    def discard_file(self, pending: PendingFile) -> None:
        self._forget(("file", pending.key))
        with pending.creating:  # no thread creates it after this
            if pending.dropped:
                return
            pending.dropped = True
            if not pending.created:
                return
        try:
            _remove_item(self._temp_fd(pending.path[:-1]), pending.name)
        except ITEM_ERRORS as e:  # never in place: say where it stays
            self._say(pending.path, f"unfinished file not removed: {reason(e)}", error=False)

    def link(self, path: Path, existing: Path) -> bool | None:
        def create(fd: int, name: bytes) -> None:
            os.link(self._actual(existing), name, src_dir_fd=self._dir_fd(existing[:-1]),
                    dst_dir_fd=fd, follow_symlinks=False)

        def finish(fd: int, name: bytes) -> None:
            expected = self._file_ids.get(existing)  # known where others could swap it
            if expected is not None:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if expected != (st.st_dev, st.st_ino):
                    raise OSError(errno.ESTALE, f"{os.fsdecode(existing[-1])} was replaced "
                                                "during the restore")

        return self._create_and_place(path, "hard link", create, finish)

    def close(self) -> None:
        try:
            for path in list(self._apart):  # a stopped restore: its finished items, in place
                self._put_in_place(path)
            self._remove_staging()
            self._staging_list.close()
            for path in sorted(self._opened_up, key=len, reverse=True):  # a stopped restore's
                self._close_up(path)
            for cache in self._caches:
                for fd in cache.values():
                    os.close(fd)
                cache.clear()
        finally:  # a process that goes on (tests, the API) may restore here again
            self._lock.release()
            os.close(self.root_fd)
