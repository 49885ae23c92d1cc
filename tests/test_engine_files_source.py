"""The built-in files source on its own: what its reader lists and skips, and that its writer
never writes outside the destination, whatever is already there."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time

import pytest
from test_backup_cli import unprivileged

from corso_core import plugins
from corso_core.engine.progress import Problems
from corso_core.errors import UsageError
from corso_core.sources.files import FILES
from corso_core.sources.files import writer as writer_module
from corso_core.sources.files.reader import FilesReader, root_names
from corso_core.sources.source import DIR, FILE, SYMLINK, Metadata


def test_files_source_is_registered_through_the_hook():
    assert plugins.sources()["files"] is FILES


def test_two_paths_with_one_base_name_get_numbered_names():
    assert root_names([b"/a/data", b"/b/data", b"/c/data/", b"/"]) == [
        b"data", b"data~2", b"data~3", b"root"]
    # A base name that a number already took takes the next (README, "Layout").
    assert root_names([b"/a/data", b"/b/data", b"/c/data~2"]) == [b"data", b"data~2",
                                                                   b"data~2~2"]


def _listed_then_swapped(tmp_path):
    """tree/zz/victim/mine listed down to `mine`; then tree/zz swapped for a symlink to a
    place holding victim/mine too (someone who can write the tree pointing it at /etc)."""
    (tmp_path / "tree" / "zz" / "victim").mkdir(parents=True)
    (tmp_path / "tree" / "zz" / "victim" / "mine").write_bytes(b"benign")
    (tmp_path / "secret" / "victim").mkdir(parents=True)
    (tmp_path / "secret" / "victim" / "mine").write_bytes(b"TOPSECRET")
    (tmp_path / "secret" / "victim" / "shadow").write_bytes(b"TOPSECRET")
    problems = Problems()
    reader = FilesReader([os.fsencode(tmp_path / "tree")], [], problems)
    [root] = reader.roots()
    [zz] = reader.children(root)
    [victim] = reader.children(zz)
    [mine] = reader.children(victim)
    os.rename(tmp_path / "tree" / "zz", tmp_path / "moved")
    os.symlink(tmp_path / "secret", tmp_path / "tree" / "zz")
    return reader, problems, victim, mine


def test_a_directory_reached_through_a_swapped_in_symlink_is_not_listed(tmp_path):
    reader, problems, victim, _ = _listed_then_swapped(tmp_path)
    assert reader.children(victim) == []
    assert problems.errors == [f"{tmp_path}/tree/zz/victim: changed while being read "
                               "(a directory on its path was replaced)"]


def test_a_file_reached_through_a_swapped_in_symlink_is_not_read(tmp_path):
    reader, problems, _, mine = _listed_then_swapped(tmp_path)
    assert reader.open(mine) is None
    assert problems.errors == [f"{tmp_path}/tree/zz/victim/mine: changed while being read "
                               "(a directory on its path was replaced)"]


def test_nothing_outside_the_tree_is_even_opened(tmp_path):
    """Opening a device can act (a watchdog, a tape that rewinds): the file is opened in its
    own directory, checked first, never by a path that leads elsewhere. A FIFO's writer,
    waiting for a reader, tells whether it was opened."""
    (tmp_path / "tree" / "zz" / "victim").mkdir(parents=True)
    (tmp_path / "tree" / "zz" / "victim" / "dev").write_bytes(b"benign")
    (tmp_path / "outside" / "victim").mkdir(parents=True)
    os.mkfifo(tmp_path / "outside" / "victim" / "dev")
    reader = FilesReader([os.fsencode(tmp_path / "tree")], [], Problems())
    [zz] = reader.children(reader.roots()[0])
    [device] = reader.children(reader.children(zz)[0])
    os.rename(tmp_path / "tree" / "zz", tmp_path / "moved")
    os.symlink(tmp_path / "outside", tmp_path / "tree" / "zz")
    opened = threading.Event()

    def writer():
        with open(tmp_path / "outside" / "victim" / "dev", "wb"):  # waits for a reader
            opened.set()

    waiting = threading.Thread(target=writer, daemon=True)
    waiting.start()
    assert reader.open(device) is None
    assert not opened.wait(0.5)
    os.close(os.open(tmp_path / "outside" / "victim" / "dev", os.O_RDONLY))  # let it go
    waiting.join(10)


def test_a_file_saved_by_rename_since_the_listing_is_read_as_it_is_now(tmp_path):
    """Editors save by writing a temp and renaming it over the name: a new inode in the same
    directory is the file now, not a swap (it was left out as replaced: a review)."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "settings.json").write_bytes(b"old")
    problems = Problems()
    reader = FilesReader([os.fsencode(tmp_path / "tree")], [], problems)
    [settings] = reader.children(reader.roots()[0])
    (tmp_path / "tree" / "new").write_bytes(b"saved")
    os.replace(tmp_path / "tree" / "new", tmp_path / "tree" / "settings.json")
    content = reader.open(settings)
    assert content.file.read() == b"saved" and problems.errors == []
    content.close()


@pytest.mark.timeout(20)
def test_fifo_and_socket_are_skipped_with_a_warning_and_never_block(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    (tmp_path / "file").write_bytes(b"x")
    problems = Problems()
    reader = FilesReader([os.fsencode(tmp_path)], [], problems)
    [root] = reader.roots()
    assert [n.name for n in reader.children(root)] == [b"file"]
    assert problems.errors == []
    assert sorted(w.split(": ", 1)[1] for w in problems.warnings) == [
        "skipped: a FIFO", "skipped: a socket"]
    server.close()


@pytest.mark.timeout(20)
def test_a_file_swapped_for_a_fifo_after_listing_is_reported_not_waited_on(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    problems = Problems()
    reader = FilesReader([os.fsencode(tmp_path)], [], problems)
    [node] = reader.children(reader.roots()[0])
    os.unlink(tmp_path / "f")
    os.mkfifo(tmp_path / "f")
    assert reader.open(node) is None
    assert "no longer a regular file" in problems.errors[0]


def test_a_file_swapped_for_a_symlink_after_listing_is_not_followed(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"do not read")
    problems = Problems()
    reader = FilesReader([os.fsencode(tmp_path)], [], problems)
    node = [n for n in reader.children(reader.roots()[0]) if n.name == b"f"][0]
    os.unlink(tmp_path / "f")
    os.symlink(tmp_path / "secret", tmp_path / "f")
    assert reader.open(node) is None
    assert "cannot open" in problems.errors[0]


def test_content_that_changes_while_read_says_so(tmp_path):
    (tmp_path / "f").write_bytes(b"before")
    reader = FilesReader([os.fsencode(tmp_path / "f")], [], Problems())
    content = reader.open(reader.roots()[0])
    assert content.changed() is None
    (tmp_path / "f").write_bytes(b"after, longer")
    assert "changed while being read" in content.changed()
    content.close()


def test_excludes_match_base_names_and_absolute_paths(tmp_path):
    for name in ("keep.txt", "drop.tmp", "cache"):
        (tmp_path / name).write_bytes(b"x")
    reader = FilesReader([os.fsencode(tmp_path)],
                         [b"*.tmp", os.fsencode(str(tmp_path / "cache"))], Problems())
    assert [n.name for n in reader.children(reader.roots()[0])] == [b"keep.txt"]


def test_an_exclude_ending_in_a_slash_or_holding_one_matches_as_it_reads(tmp_path):
    """`cache/` and `build/tmp` matched nothing (a name holds no "/", and a relative glob
    never matches an absolute path), and the backup took what the user meant to leave out."""
    for where in ("cache/a", "logs/cache", "build/tmp/b", "other/tmp/c", "home/u/.cache/d"):
        (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / where).write_bytes(b"x")
    # A relative glob with a "/" still matches a whole path as before: one starting with a
    # wildcard can (the `*` matching the path's start).
    whole = b"*" + os.fsencode(tmp_path / "home") + b"/*/.cache"
    reader = FilesReader([os.fsencode(tmp_path)], [b"cache/", b"build/tmp", whole], Problems())
    kept, pending = [], reader.roots()
    while pending:
        node = pending.pop()
        kept.append(os.fsdecode(node.handle)[len(str(tmp_path)):])
        if node.meta.kind == DIR:
            pending.extend(reader.children(node))
    assert sorted(kept) == ["", "/build", "/home", "/home/u", "/logs", "/logs/cache", "/other",
                            "/other/tmp", "/other/tmp/c"]  # `cache/` keeps the file logs/cache


@pytest.mark.parametrize("one_file_system", [False, True])
def test_one_file_system_keeps_a_mount_point_but_does_not_enter_it(one_file_system):
    """/proc is a filesystem of its own under / on every Linux: a real mount point."""
    values = {"path": ["/"], "exclude": ()}
    if one_file_system:
        values["one_file_system"] = True  # as `backup create files -x` gives it
    reader = FILES.open_reader(values, Problems())
    [root] = reader.roots()
    [proc] = [n for n in reader.children(root) if n.name == b"proc"]
    assert proc.meta.kind == DIR and proc.meta.dev != root.meta.dev
    assert (reader.children(proc) == []) is one_file_system


def test_a_path_given_is_backed_up_even_where_an_exclude_matches_it(tmp_path):
    (tmp_path / "named.tmp").write_bytes(b"x")
    (tmp_path / "named.tmp.d").mkdir()
    (tmp_path / "named.tmp.d" / "inside.tmp").write_bytes(b"x")
    paths = [os.fsencode(tmp_path / name) for name in ("named.tmp", "named.tmp.d")]
    reader = FilesReader(paths, [b"*.tmp", b"*.d"], Problems())
    roots = reader.roots()
    assert [n.name for n in roots] == [b"named.tmp", b"named.tmp.d"]
    assert reader.children(roots[1]) == []  # below a root, the excludes apply


# --- the writer ----------------------------------------------------------------------------


def test_a_repository_whose_format_blob_is_damaged_is_still_left_alone(tmp_path):
    """The guard looked at `format` only: a repository whose `format` was damaged (a state
    its README recovery starts from: `format-copy` intact) had that copy replaced by a
    backup's file of the same name, and was lost."""
    from corso_core.repo.repository import init_repository
    from corso_core.storage.filesystem import FilesystemStorage

    repository = tmp_path / "dest" / "repo"
    init_repository(FilesystemStorage(str(repository)), "pw")
    (repository / "format").write_bytes(b"")
    copy = (repository / "format-copy").read_bytes()
    problems = Problems()
    writer = FILES.open_writer({"destination": str(tmp_path / "dest")}, "replace", problems)
    assert writer.make_dir((b"repo",), Metadata(DIR, mode=0o755)) is False
    writer.close()
    assert (repository / "format-copy").read_bytes() == copy
    assert problems.errors == [f"{repository}: not restored: a corso repository is there"]
    with pytest.raises(UsageError, match="is inside the corso repository"):
        FILES.open_writer({"destination": str(repository / "data")}, "replace", Problems())


def test_a_staging_directory_that_could_not_be_made_is_not_said_to_stay(tmp_path, monkeypatch):
    """On a read-only destination every staging directory's mkdir fails (said, with the item
    it was for); close() then warned that each was "not removed" too, though none was made."""
    (tmp_path / "dest" / "existing").mkdir(parents=True)
    def read_only_for_staging(real):
        def call(path, *args, **kwargs):
            if os.fsencode(path).endswith(b"-staging"):  # as a read-only filesystem answers
                raise OSError(errno.EROFS, "Read-only file system")
            return real(path, *args, **kwargs)
        return call

    for name in ("mkdir", "rmdir"):
        monkeypatch.setattr(writer_module.os, name, read_only_for_staging(getattr(os, name)))
    problems = Problems()
    writer = FILES.open_writer({"destination": str(tmp_path / "dest")}, "skip", problems)
    assert writer.make_dir((b"existing",), Metadata(DIR, mode=0o755)) is True
    handle = writer.start_file((b"existing", b"f"), Metadata(FILE, mode=0o644, size=1))
    if handle:
        with pytest.raises(OSError):
            writer.write(handle, 0, b"x")
    writer.close()
    assert not [w for w in problems.warnings if "not removed" in w], problems.warnings


def test_a_stop_as_a_directory_built_apart_is_made_leaves_no_staging_behind(tmp_path,
                                                                          monkeypatch):
    """Ctrl-C raised as the mkdir of a directory built apart (in the staging directory of an
    existing one) returned: the writer did not know of it, so close() left the staging
    directory and warned "not removed: Directory not empty" (a flaky CLI test found it)."""
    (tmp_path / "dest").mkdir()
    real_mkdir = os.mkdir

    def mkdir_then_stop(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        name = os.fsencode(path)
        if name.startswith(b".corso-restore-") and not name.endswith(b"staging"):
            raise KeyboardInterrupt

    monkeypatch.setattr(writer_module.os, "mkdir", mkdir_then_stop)
    problems = Problems()
    writer = FILES.open_writer({"destination": str(tmp_path / "dest")}, "skip", problems)
    with pytest.raises(KeyboardInterrupt):
        writer.make_dir((b"d",), Metadata(DIR, mode=0o755))
    monkeypatch.undo()
    writer.close()
    assert (problems.warnings, problems.errors) == ([], [])
    assert os.listdir(tmp_path / "dest") == []


FILE_META = Metadata(FILE, mode=0o644, size=5, mtime_ns=10**18)
DIR_META = Metadata(DIR, mode=0o755, mtime_ns=10**18)


def _restore_one_file(destination, path, collisions, data=b"fresh", meta=FILE_META):
    problems = Problems()
    writer = FILES.open_writer({"destination": str(destination)}, collisions, problems)
    for i in range(1, len(path)):
        if not writer.make_dir(path[:i], DIR_META):
            break
    else:
        handle = writer.start_file(path, meta)
        if handle:  # not skipped (None), not refused (False)
            writer.write(handle, 0, data)
            writer.finish_file(handle)
    writer.close()
    return problems


@pytest.mark.parametrize("collisions", ["skip", "copy", "replace"])
def test_a_symlinked_directory_in_the_destination_is_never_followed(tmp_path, collisions):
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "dest"
    destination.mkdir()
    os.symlink(outside, destination / "a")
    _restore_one_file(destination, (b"a", b"x"), collisions)
    assert list(outside.iterdir()) == []
    if collisions == "replace":
        assert (destination / "a" / "x").read_bytes() == b"fresh"
        assert not (destination / "a").is_symlink()
    elif collisions == "copy":
        assert (destination / "a.restored" / "x").read_bytes() == b"fresh"
        assert (destination / "a").is_symlink()
    else:
        assert (destination / "a").is_symlink()


@pytest.mark.parametrize("collisions", ["skip", "copy", "replace"])
def test_a_symlinked_file_in_the_destination_is_never_written_through(tmp_path, collisions):
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    destination = tmp_path / "dest"
    destination.mkdir()
    os.symlink(target, destination / "f")
    _restore_one_file(destination, (b"f",), collisions)
    assert target.read_bytes() == b"precious"
    expected = {"skip": None, "copy": "f.restored", "replace": "f"}[collisions]
    if expected:
        assert not (destination / expected).is_symlink()
        assert (destination / expected).read_bytes() == b"fresh"
    assert (destination / "f").is_symlink() == (collisions != "replace")


@pytest.mark.parametrize("name", [b"..", b".", b"a/../../x", b"", b"nul\0"])
@pytest.mark.parametrize("parent", [(), (b"made",)], ids=["existing", "made"])
def test_names_that_could_escape_are_refused(tmp_path, name, parent):
    """In the destination, and in a directory the restore made (whose names need no look)."""
    destination = tmp_path / "d" / "dest"
    destination.mkdir(parents=True)
    problems = _restore_one_file(destination, (*parent, name), "replace")
    assert len(problems.errors) == 1 and "refused" in problems.errors[0]
    assert sorted(os.listdir(tmp_path / "d")) == ["dest"]
    assert os.listdir(destination) == [*(os.fsdecode(p) for p in parent)]
    if parent:
        assert os.listdir(destination / "made") == []


def test_a_directory_the_restore_makes_shows_nothing_until_all_in_it_is_finished(tmp_path):
    """It takes its name at once, empty; what is restored into it appears there, complete and
    with its metadata, when the directory is finished, and no temporary item stays."""
    writer = FILES.open_writer({"destination": str(tmp_path)}, "skip", Problems())
    assert writer.make_dir((b"d",), DIR_META) and writer.make_dir((b"d", b"e"), DIR_META)
    handle = writer.start_file((b"d", b"e", b"f"), FILE_META)
    writer.write(handle, 0, b"fre")
    assert writer.make_symlink((b"d", b"link"), Metadata(SYMLINK, target=b"e/f"))
    assert os.listdir(tmp_path / "d") == []
    writer.write(handle, 3, b"sh")
    assert writer.finish_file(handle) is True
    assert os.listdir(tmp_path / "d") == []
    writer.finish_dir((b"d", b"e"), DIR_META)
    writer.finish_dir((b"d",), DIR_META)
    assert (tmp_path / "d" / "link").read_bytes() == b"fresh"
    assert (tmp_path / "d" / "e" / "f").stat().st_mtime_ns == FILE_META.mtime_ns
    assert (tmp_path / "d").stat().st_mtime_ns == DIR_META.mtime_ns
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["d"]


@pytest.mark.parametrize("made", [True, False], ids=["made", "existing"])
def test_a_file_written_whole_comes_back_with_its_metadata(tmp_path, made):
    if not made:
        (tmp_path / "d").mkdir()
    writer, problems = _writer_into(tmp_path)
    assert writer.make_dir((b"d",), DIR_META)
    meta = FILE_META._replace(mode=0o640)
    assert writer.write_file(writer.start_file((b"d", b"f"), meta), b"fresh") is True
    writer.finish_dir((b"d",), DIR_META)
    writer.close()
    st = os.stat(tmp_path / "d" / "f")
    assert (tmp_path / "d" / "f").read_bytes() == b"fresh" and problems.errors == []
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, FILE_META.mtime_ns)
    assert os.listdir(tmp_path / "d") == ["f"]


def test_a_file_written_whole_whose_metadata_is_refused_is_not_kept(tmp_path, monkeypatch):
    writer, problems = _writer_into(tmp_path)
    assert writer.make_dir((b"d",), DIR_META)
    handle = writer.start_file((b"d", b"f"), FILE_META)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "utime", refuse)
    assert writer.write_file(handle, b"fresh") is False
    monkeypatch.undo()
    writer.finish_dir((b"d",), DIR_META)
    writer.close()
    assert os.listdir(tmp_path / "d") == []
    assert problems.errors == [f"{tmp_path}/d/f: cannot finish file: Operation not permitted"]


def test_a_stopped_restore_puts_what_it_finished_in_place_and_drops_the_rest(tmp_path):
    """Stopped (Ctrl-C, SIGTERM, a full disk), the restore discards its unfinished files and
    closes the writer: the directories it made come into place with the finished ones."""
    writer = FILES.open_writer({"destination": str(tmp_path)}, "skip", Problems())
    assert writer.make_dir((b"d",), DIR_META)
    done, torn = (writer.start_file((b"d", name), FILE_META) for name in (b"done", b"torn"))
    writer.write(done, 0, b"whole")
    writer.finish_file(done)
    writer.write(torn, 0, b"half")
    writer.discard_file(torn)
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["d"]
    assert os.listdir(tmp_path / "d") == ["done"]
    assert (tmp_path / "d" / "done").read_bytes() == b"whole"


def test_a_second_entry_refused_in_a_directory_the_restore_made_leaves_the_first(tmp_path):
    """There an item is made under its own name: one that fails is removed only if it was
    made (a target holding NUL fails before any system call)."""
    writer, problems = _writer_into(tmp_path)
    assert writer.make_dir((b"d",), DIR_META)
    link = Metadata(SYMLINK, target=b"good")
    assert writer.make_symlink((b"d", b"x"), link) is True
    assert writer.make_symlink((b"d", b"x"), link._replace(target=b"a\0b")) is False
    assert writer.make_symlink((b"d", b"x"), link._replace(target=b"other")) is False
    writer.finish_dir((b"d",), DIR_META)
    writer.close()
    assert os.readlink(tmp_path / "d" / "x") == "good" and len(problems.errors) == 2


@pytest.mark.parametrize("made", [True, False], ids=["made", "existing"])
def test_a_file_gets_its_mode_whatever_the_umask(tmp_path, made):
    """Files are created with their mode where creating gives it exactly: a umask that takes
    bits away means setting it after."""
    if not made:
        (tmp_path / "d").mkdir()
    old = os.umask(0o077)
    try:
        _restore_one_file(tmp_path, (b"d", b"f"), "skip", meta=FILE_META._replace(mode=0o664))
        _restore_one_file(tmp_path, (b"d", b"g"), "skip", meta=FILE_META._replace(mode=0o600))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "f").st_mode) == 0o664
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "g").st_mode) == 0o600


def test_the_writer_reads_the_umask_without_setting_it(monkeypatch):
    """Setting it to read it would change it, for an instant, for every thread of the
    process: a file another thread made then would get the wrong mode."""
    old = os.umask(0o027)
    try:
        def refuse(mask):
            raise AssertionError("the umask was set")

        monkeypatch.setattr(os, "umask", refuse)
        assert writer_module._umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(old)


@pytest.mark.parametrize("made", [True, False], ids=["made", "existing"])
def test_a_file_gets_its_mode_under_a_default_acl(tmp_path, made):
    """A directory's default ACL, not the umask, gives what is created in it its mode (here:
    nothing for others): the mode is then set after creating."""
    (tmp_path / "d").mkdir()
    entries = ((0x01, 0o7), (0x04, 0o5), (0x20, 0o0))  # user::rwx group::r-x other::---
    os.setxattr(tmp_path / "d", "system.posix_acl_default", struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries))
    path = (b"d", b"e", b"f") if made else (b"d", b"f")
    _restore_one_file(tmp_path, path, "skip", meta=FILE_META._replace(mode=0o644))
    mode = os.stat(tmp_path.joinpath(*map(os.fsdecode, path))).st_mode
    assert stat.S_IMODE(mode) == 0o644


@pytest.mark.parametrize("made", [True, False], ids=["made", "existing"])
def test_a_file_restored_as_root_into_a_set_group_id_directory_gets_its_own_group(tmp_path,
                                                                                  made):
    """A file created there takes the directory's group: the backup's is set after, though
    its owner and group are the restoring user's own."""
    if os.geteuid() != 0:  # owners are restored as root only
        assert not _restore_one_file(tmp_path, (b"f",), "skip").errors
        return
    (tmp_path / "g").mkdir()
    os.chown(tmp_path / "g", 0, 65534)
    os.chmod(tmp_path / "g", 0o2775)
    path = (b"g", b"d", b"f") if made else (b"g", b"f")
    _restore_one_file(tmp_path, path, "skip", meta=FILE_META._replace(uid=0, gid=0))
    st = os.stat(tmp_path.joinpath(*map(os.fsdecode, path)))
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_a_directory_filled_meanwhile_by_another_process_keeps_what_it_holds(tmp_path):
    """A file another process puts in a directory the restore made (its name taken, empty,
    at once) is neither overwritten nor mixed with the restored ones: the restored directory
    stays apart, and the error says where."""
    problems = Problems()
    writer = FILES.open_writer({"destination": str(tmp_path)}, "replace", problems)
    assert writer.make_dir((b"d",), DIR_META)
    handle = writer.start_file((b"d", b"f"), FILE_META)
    writer.write(handle, 0, b"fresh")
    (tmp_path / "d" / "f").write_bytes(b"theirs")
    assert writer.finish_file(handle) is True
    writer.finish_dir((b"d",), DIR_META)
    writer.close()
    assert os.listdir(tmp_path / "d") == ["f"]
    assert (tmp_path / "d" / "f").read_bytes() == b"theirs"
    [error] = problems.errors
    assert error.startswith(f"{tmp_path}/d: not put in place: Directory not empty; restored as ")
    apart = error.split("restored as ")[1]
    assert os.path.dirname(apart).startswith(f"{tmp_path}/.corso-restore-")
    assert open(os.path.join(apart, "f"), "rb").read() == b"fresh"


def test_copy_shortens_a_long_name_to_fit_its_suffix(tmp_path):
    long = b"n" * 250
    (tmp_path / os.fsdecode(long)).write_bytes(b"theirs")
    (tmp_path / os.fsdecode(long[:246] + b".restored")).write_bytes(b"an earlier copy")
    problems = _restore_one_file(tmp_path, (long,), "copy")
    assert problems.errors == []
    assert (tmp_path / os.fsdecode(long[:244] + b".restored-2")).read_bytes() == b"fresh"
    assert (tmp_path / os.fsdecode(long)).read_bytes() == b"theirs"


@pytest.mark.parametrize("collisions", ["skip", "copy", "replace"])
def test_the_writer_says_whether_it_made_each_item_or_the_policy_skipped_it_or_it_failed(
        tmp_path, collisions):
    """What the restore counts: True made (perhaps under another name), None left alone by
    the collision policy, False failed and reported as an error. Here a file stands where a
    directory goes, directories where a file and a symlink go (replace never deletes one)."""
    (tmp_path / "d").write_bytes(b"theirs")
    (tmp_path / "f").mkdir()
    (tmp_path / "l").mkdir()
    problems = Problems()
    writer = FILES.open_writer({"destination": str(tmp_path)}, collisions, problems)
    made_dir = writer.make_dir((b"d",), DIR_META)
    made_symlink = writer.make_symlink((b"l",), Metadata(SYMLINK, target=b"f"))
    handle = writer.start_file((b"f",), FILE_META)
    if handle:
        writer.write(handle, 0, b"fresh")
        handle = writer.finish_file(handle)
    refused = writer.make_dir((b"..",), DIR_META), writer.start_file((b"a/b",), FILE_META)
    writer.close()
    assert (made_dir, made_symlink, handle) == {"skip": (None, None, None),
                                                "copy": (True, True, True),
                                                "replace": (True, False, False)}[collisions]
    assert refused == (False, False)
    assert len(problems.errors) == 2 + 2 * (collisions == "replace")


def test_a_file_written_by_two_threads_at_once_is_created_once(tmp_path, monkeypatch):
    """Chunks of one file from two packs arrive on two reader threads: the first creates the
    temp, the other waits for it and opens it (the create is slowed so both arrive there)."""
    real_open = os.open

    def slow_create(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            time.sleep(0.05)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", slow_create)
    writer = FILES.open_writer({"destination": str(tmp_path)}, "skip", Problems())
    handle = writer.start_file((b"f",), Metadata(FILE, mode=0o644, size=10, mtime_ns=10**18))
    halves = [threading.Thread(target=writer.write, args=(handle, offset, data))
              for offset, data in ((0, b"first"), (5, b"-last"))]
    for thread in halves:
        thread.start()
    for thread in halves:
        thread.join()
    writer.finish_file(handle)
    writer.close()
    assert (tmp_path / "f").read_bytes() == b"first-last"


NOBODY = 65534


def test_threads_refused_at_once_in_the_users_locked_directories_open_them_up_once(
        monkeypatch):
    """Eight writer threads start files at once in existing directories of the user's that a
    first restore left locked: 0555 (opened, but its staging directory cannot be made), 0600
    (opened, but no name looked up), 000 (not opened). Each is opened up (u+rwx) once, by the
    thread refused first (the chmod is slowed so that the others are refused meanwhile), every
    file is restored, and each gets its mode back. Root's 0555 stays refused: its files fail,
    its mode and contents unchanged."""
    if os.geteuid() != 0:
        pytest.skip("needs a directory of someone else's and one of nobody's: run as root")
    work = tempfile.mkdtemp(prefix="corso-locked-")
    try:
        dest = os.path.join(work, "dest")
        mine = {b"d0555": 0o555, b"d0600": 0o600, b"d000": 0o000}
        os.mkdir(dest)
        for name in mine:
            os.mkdir(os.path.join(dest.encode(), name))
        os.chown(work, NOBODY, NOBODY)
        os.chown(dest, NOBODY, NOBODY)
        for name, mode in mine.items():
            os.chown(os.path.join(dest.encode(), name), NOBODY, NOBODY)
            os.chmod(os.path.join(dest.encode(), name), mode)
        os.mkdir(os.path.join(dest, "theirs"), 0o555)  # root's
        meta = Metadata(FILE, mode=0o644, uid=NOBODY, gid=NOBODY, size=4, mtime_ns=10**18)
        barrier, placed, failed, opened_up = threading.Barrier(8), [], [], []
        real_chmod = os.chmod

        def slow_chmod(path, mode, *args, **kwargs):
            time.sleep(0.05)
            opened_up.append(stat.S_IMODE(mode))
            return real_chmod(path, mode, *args, **kwargs)


        def write(n: int) -> None:
            barrier.wait()
            for name in [*mine, b"theirs"]:
                path = (name, b"f%d" % n)
                try:
                    pending = writer.start_file(path, meta)
                    if pending is None or pending is False:  # skipped, failed (reported)
                        placed.append((path, pending))
                    else:
                        placed.append((path, writer.write_file(pending, b"%4d" % n)))
                except PermissionError:
                    failed.append(path)

        monkeypatch.setattr(os, "chmod", slow_chmod)
        with unprivileged():
            writer = FILES.open_writer({"destination": dest}, "skip", Problems())
            threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for name in [*mine, b"theirs"]:
                writer.finish_dir((name,), Metadata(DIR, mode=0o755))
            writer.close()
            restored = {name: sorted(os.listdir(os.path.join(dest.encode(), name)))
                        for name in [b"d0555", b"d0600", b"theirs"]}
        monkeypatch.undo()
        assert sorted(opened_up) == [0o700, 0o700, 0o755]  # once each: 000 and 0600, 0555
        modes = {name: stat.S_IMODE(os.stat(os.path.join(dest.encode(), name)).st_mode)
                 for name in [*mine, b"theirs"]}
        assert modes == {**mine, b"theirs": 0o555}
        assert sorted(failed) == [(b"theirs", b"f%d" % n) for n in range(8)]
        files = [b"f%d" % n for n in range(8)]
        assert sorted(placed) == [((name, f), True) for name in sorted(mine) for f in files]
        assert restored == {b"d0555": files, b"d0600": files, b"theirs": []}
        assert sorted(os.listdir(os.path.join(dest.encode(), b"d000"))) == files  # as root
        for name in mine:
            with open(os.path.join(dest.encode(), name, b"f3"), "rb") as f:
                assert f.read() == b"   3"
    finally:
        for top, dirs, _ in os.walk(work):
            for name in dirs:
                os.chmod(os.path.join(top, name), 0o700)
        shutil.rmtree(work, ignore_errors=True)


# Whoever else can write a directory of the destination (a restore into a shared place) must
# not be able to make the restore write, chmod or link anything outside it.


def _writer_into(destination, collisions="skip"):
    problems = Problems()
    return FILES.open_writer({"destination": str(destination)}, collisions, problems), problems


def test_temp_files_for_an_existing_directory_are_made_where_nobody_else_can_write(tmp_path):
    (tmp_path / "dest" / "shared").mkdir(parents=True)
    writer, problems = _writer_into(tmp_path / "dest")
    assert writer.make_dir((b"shared",), DIR_META)
    handle = writer.start_file((b"shared", b"f"), FILE_META)
    writer.write(handle, 0, b"fre")  # half of it: the temp exists, unfinished
    # In the directory (so on its filesystem) but inside a 0700 one: nothing there to swap.
    [staging] = os.listdir(tmp_path / "dest" / "shared")
    assert os.stat(tmp_path / "dest" / "shared" / staging).st_mode & 0o777 == 0o700
    assert len(os.listdir(tmp_path / "dest" / "shared" / staging)) == 1  # the temp
    writer.write(handle, 3, b"sh")
    assert writer.finish_file(handle) is True
    writer.close()
    assert os.listdir(tmp_path / "dest" / "shared") == ["f"] and problems.errors == []
    assert (tmp_path / "dest" / "shared" / "f").read_bytes() == b"fresh"
    assert os.listdir(tmp_path / "dest") == ["shared"]


def test_a_directory_swapped_during_the_restore_is_refused(tmp_path):
    destination = tmp_path / "dest"
    (destination / "d").mkdir(parents=True)
    writer, problems = _writer_into(destination)
    assert writer.make_dir((b"d",), DIR_META)  # there already: entered
    first = writer.start_file((b"d", b"one"), FILE_META)
    writer.write(first, 0, b"fresh")
    assert writer.finish_file(first) is True
    # Another user renames the directory away and puts their own in its place; the restore
    # opens it again by name (its descriptor cache let it go).
    os.rename(destination / "d", destination / "theirs-was-ours")
    (destination / "d").mkdir(mode=0o777)
    writer._forget(("dir", (b"d",)))
    second = writer.start_file((b"d", b"two"), FILE_META)
    assert second is False and "Replaced during the restore" in problems.errors[0]
    writer.close()
    assert os.listdir(destination / "d") == []


@pytest.mark.parametrize("theirs_holds", [[], ["f"]])
def test_a_directory_the_restore_made_swapped_for_someone_elses_gets_nothing_written_in(
        tmp_path, theirs_holds):
    """The name a directory the restore makes takes at once is only moved onto at the end: one
    swapped in meanwhile (by whoever can write the parent) is replaced if empty, else left as
    it is, the restored directory apart and named."""
    destination = tmp_path / "dest"
    destination.mkdir(mode=0o777)
    writer, problems = _writer_into(destination)
    assert writer.make_dir((b"d",), DIR_META)
    os.rename(destination / "d", destination / "ours")
    (destination / "d").mkdir(mode=0o777)
    if theirs_holds:
        (destination / "d" / "f").symlink_to(tmp_path / "victim")
    os.chown(destination / "d", 65534, 65534)
    handle = writer.start_file((b"d", b"f"), FILE_META)
    writer.write(handle, 0, b"fresh")
    assert writer.finish_file(handle) is True
    writer.finish_dir((b"d",), DIR_META)
    writer.close()
    assert not (tmp_path / "victim").exists()
    assert sorted(os.listdir(destination / "d")) == ["f"]
    if theirs_holds:
        assert (destination / "d" / "f").is_symlink()
        [error] = problems.errors
        assert "not put in place: Directory not empty; restored as " in error
    else:
        assert (destination / "d" / "f").read_bytes() == b"fresh" and problems.errors == []


@pytest.mark.parametrize("destination_mode", [0o777, 0o755])
def test_a_staging_directory_swapped_before_its_first_use_is_refused_where_others_could(
        tmp_path, monkeypatch, destination_mode):
    """Between the restore's mkdir of a staging directory and its first open, only a user who
    can rename entries in the parent could swap it for one of their own (owned by them)."""
    destination = tmp_path / "dest"
    destination.mkdir()
    destination.chmod(destination_mode)
    mkdir = os.mkdir

    def swapped_as_made(name, mode=0o777, *, dir_fd=None):
        mkdir(name, mode, dir_fd=dir_fd)
        if name.endswith(b"staging"):
            os.rename(name, b"ours", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            mkdir(name, 0o700, dir_fd=dir_fd)
            os.chown(name, 65534, 65534, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", swapped_as_made)
    writer, problems = _writer_into(destination)
    made = writer.make_dir((b"d",), DIR_META)
    if destination_mode & 0o022:
        assert made is False and "Replaced during the restore" in problems.errors[0]
        assert not (destination / "d").exists()
    else:  # nobody else could have: a filesystem that keeps no owners, say (FAT, NFS)
        assert made is True and problems.errors == []
    writer.close()


def test_a_file_discarded_by_one_thread_is_not_created_again_by_the_other(tmp_path):
    writer, _ = _writer_into(tmp_path)
    writer.make_dir((b"d",), DIR_META)
    handle = writer.start_file((b"d", b"f"), FILE_META)
    writer.discard_file(handle)  # the thread that failed on it
    with pytest.raises(FileNotFoundError):
        writer.write(handle, 0, b"fresh")  # the other, a moment late
    writer.discard_file(handle)  # and again: nothing happens
    writer.close()
    assert os.listdir(tmp_path / "d") == []


def test_a_hard_link_source_swapped_during_the_restore_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"victim")
    (tmp_path / "dest" / "shared").mkdir(parents=True)
    writer, problems = _writer_into(tmp_path / "dest")
    writer.make_dir((b"shared",), DIR_META)
    linked = FILE_META._replace(nlink=2, inode=7)
    handle = writer.start_file((b"shared", b"a"), linked)
    writer.write(handle, 0, b"fresh")
    assert writer.finish_file(handle) is True
    os.unlink(tmp_path / "dest" / "shared" / "a")
    os.link(outside / "victim", tmp_path / "dest" / "shared" / "a")
    assert writer.link((b"shared", b"b"), (b"shared", b"a")) is False
    writer.close()
    assert "was replaced during the restore" in problems.errors[0]
    assert not (tmp_path / "dest" / "shared" / "b").exists()
    assert os.stat(outside / "victim").st_nlink == 2  # its own name, and "a": no more


def test_a_destination_that_is_a_file_is_bad_input(tmp_path):
    (tmp_path / "file").write_bytes(b"keep")
    with pytest.raises(UsageError, match="not a directory"):
        FILES.open_writer({"destination": str(tmp_path / "file")}, "skip", Problems())
    assert (tmp_path / "file").read_bytes() == b"keep"


def test_a_discarded_file_leaves_nothing_visible(tmp_path):
    writer = FILES.open_writer({"destination": str(tmp_path)}, "skip", Problems())
    handle = writer.start_file((b"f",), FILE_META)
    writer.write(handle, 0, b"half")
    writer.discard_file(handle)
    writer.close()
    assert os.listdir(tmp_path) == []


def test_a_filesystem_without_hard_links_or_owners_still_gets_every_file(tmp_path, monkeypatch):
    """As FAT answers: link() and chown() refused with EPERM; files still arrive whole."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    for call in ("link", "fchown", "chown"):
        monkeypatch.setattr(os, call, refuse)
    problems = _restore_one_file(tmp_path, (b"d", b"f"), "skip", data=b"whole",
                     meta=FILE_META._replace(uid=1000, gid=1000))
    assert (tmp_path / "d" / "f").read_bytes() == b"whole"
    assert problems.errors == []
    assert problems.warnings == ([] if os.geteuid() else [
        f"{tmp_path}: owners not restored: Operation not permitted (a filesystem without "
        "owners, or a root without the right to give files away)"])


def test_a_small_file_is_read_in_when_opened_a_large_one_is_not(tmp_path, monkeypatch):
    import corso_core.sources.files.reader as files_reader

    (tmp_path / "small").write_bytes(b"s" * files_reader.READ_IN_ON_OPEN)
    (tmp_path / "large").write_bytes(b"l" * (files_reader.READ_IN_ON_OPEN + 1))
    hinted = []
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, offset, length, advice: hinted.append((os.fstat(fd).st_size,
                                                                          advice)))
    reader = FilesReader([os.fsencode(tmp_path)], [], Problems())
    [root] = reader.roots()
    for node in reader.children(root):
        reader.open(node).close()
    assert hinted == [(files_reader.READ_IN_ON_OPEN, os.POSIX_FADV_WILLNEED)]


def test_a_refused_read_in_hint_leaves_the_file_readable(tmp_path, monkeypatch):
    (tmp_path / "small").write_bytes(b"still read")

    def refusing(fd, offset, length, advice):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", refusing)
    problems = Problems()
    reader = FilesReader([os.fsencode(tmp_path)], [], problems)
    [root] = reader.roots()
    [node] = reader.children(root)
    content = reader.open(node)
    assert content.file.read() == b"still read" and problems.errors == []
    content.close()
    monkeypatch.delattr(os, "posix_fadvise")  # a system without it (macOS)
    content = reader.open(node)
    assert content.file.read() == b"still read" and problems.errors == []
    content.close()


def open_descriptors() -> set[int]:
    """This process's open descriptors (not the one that listed them, closed by now)."""
    listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    return {fd for fd in listed if _is_open(fd)}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_files_of_one_directory_are_opened_through_one_descriptor_of_it(tmp_path,
                                                                             monkeypatch):
    """A reader keeps the directory it last opened a file in (three system calls less per
    file), one per thread, closed when the thread or the reader is gone."""
    for name in "abcdefgh":
        (tmp_path / "tree" / "one").mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / "one" / name).write_bytes(name.encode())
    (tmp_path / "tree" / "two").mkdir()
    (tmp_path / "tree" / "two" / "z").write_bytes(b"z")
    before = open_descriptors()
    reader = FilesReader([os.fsencode(tmp_path / "tree")], [], Problems())
    [root] = reader.roots()
    one, two = reader.children(root)
    files = [*reader.children(one), *reader.children(two)]
    directories_opened = []
    real_open = os.open

    def spying(path, flags, *args, **kwargs):
        if flags & os.O_DIRECTORY:
            directories_opened.append(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying)

    def read_all(reader, nodes) -> list[bytes]:
        read = []
        for node in nodes:
            content = reader.open(node)
            read.append(content.file.read())
            content.close()
        return read

    assert read_all(reader, files) == [name.encode() for name in "abcdefghz"]
    assert directories_opened == [f"{tmp_path}/tree/one/".encode(),
                                  f"{tmp_path}/tree/two/".encode()]
    in_a_thread = []
    thread = threading.Thread(target=lambda one: in_a_thread.extend(read_all(one, files[:2])),
                              args=(reader,))
    thread.start()
    thread.join()
    assert in_a_thread == [b"a", b"b"] and len(directories_opened) == 3  # its own
    assert open_descriptors() - before == {reader._last_directory.directory.fd}
    del reader
    assert open_descriptors() == before


def test_a_directory_swapped_once_its_first_file_is_open_gives_only_its_own_files(tmp_path):
    """The descriptor kept is of the directory that listed the files, checked when opened: a
    swap after that leaves the next file read from there, never from where the swapped-in
    symlink leads (nothing outside the tree is opened: a FIFO there stays unopened)."""
    (tmp_path / "tree" / "zz" / "victim").mkdir(parents=True)
    (tmp_path / "tree" / "zz" / "victim" / "a").write_bytes(b"first")
    (tmp_path / "tree" / "zz" / "victim" / "dev").write_bytes(b"benign")
    (tmp_path / "outside" / "victim").mkdir(parents=True)
    os.mkfifo(tmp_path / "outside" / "victim" / "dev")
    problems = Problems()
    reader = FilesReader([os.fsencode(tmp_path / "tree")], [], problems)
    [zz] = reader.children(reader.roots()[0])
    first, device = reader.children(reader.children(zz)[0])
    content = reader.open(first)
    assert content.file.read() == b"first"
    content.close()
    os.rename(tmp_path / "tree" / "zz", tmp_path / "moved")
    os.symlink(tmp_path / "outside", tmp_path / "tree" / "zz")
    content = reader.open(device)
    assert content.file.read() == b"benign" and problems.errors == []
    content.close()
