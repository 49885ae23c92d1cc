"""What a restore killed outright leaves in its destination (its staging directories and their
list) is removed by the next restore into it (sources/files/leftovers.py): never what a
running restore holds, never anything reached through a symlink, and a list that cannot be
read safely is left alone."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from corso_core.engine.progress import Problems
from corso_core.errors import CorsoError
from corso_core.sources.files import FILES
from corso_core.sources.files import leftovers as leftovers_module
from corso_core.sources.files.destination_lock import DestinationLock
from corso_core.sources.source import DIR, FILE, Metadata

FILE_META = Metadata(FILE, mode=0o644, size=5, mtime_ns=10**18)
DIR_META = Metadata(DIR, mode=0o755, mtime_ns=10**18)
REMOVED = "removed: left by an interrupted restore"


def open_writer(destination: Path):
    problems = Problems()
    return FILES.open_writer({"destination": str(destination)}, "skip", problems), problems


def leftovers(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".corso-restore-"))


def restore_half_a_file(destination: Path, go_on_reading=None) -> int:
    """In a child process, restore half of shared/f into `destination` (an existing
    directory, so in a staging directory), then leave as SIGKILL would (os._exit: nothing
    cleaned up); with `go_on_reading` (a pipe's end), only once a byte arrives on it.
    Returns the child's pid once its staging directory is there."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            writer, _ = open_writer(destination)
            writer.make_dir((b"shared",), DIR_META)
            handle = writer.start_file((b"shared", b"f"), FILE_META)
            writer.write(handle, 0, b"fre")
            os.write(ready_w, b"!")
            if go_on_reading is not None:
                os.read(go_on_reading, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"!"
    os.close(ready_r)
    return pid


@pytest.fixture
def destination(tmp_path) -> Path:
    (tmp_path / "dest" / "shared").mkdir(parents=True)
    return tmp_path / "dest"


def test_the_next_restore_removes_what_a_killed_one_left(destination):
    os.waitpid(restore_half_a_file(destination), 0)
    [listed] = leftovers(destination)
    [staging] = leftovers(destination / "shared")
    assert listed == staging + "-list"
    assert os.listdir(destination / "shared" / staging)  # the half-written file

    writer, problems = open_writer(destination)
    assert leftovers(destination) == [] and leftovers(destination / "shared") == []
    assert problems.warnings == [f"{destination / 'shared' / staging}: {REMOVED}"]
    writer.close()
    assert os.listdir(destination) == ["shared"]


def test_the_empty_directory_a_killed_restore_held_a_name_with_goes_too(destination):
    """A directory the restore makes in an existing one holds its name empty (0700) while it
    is built apart: left by a killed restore, the next one entered it as an existing
    directory and kept its 0700 and its mtime."""
    pid = os.fork()
    if pid == 0:
        try:
            writer, _ = open_writer(destination)
            writer.make_dir((b"new",), DIR_META)  # takes "new", builds it in staging
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert stat.S_IMODE(os.stat(destination / "new").st_mode) == 0o700
    writer, problems = open_writer(destination)
    assert not (destination / "new").exists() and leftovers(destination) == []
    assert f"{destination / 'new'}: removed: left empty by an interrupted restore" in \
        problems.warnings
    assert writer.make_dir((b"new",), DIR_META)
    writer.finish_dir((b"new",), DIR_META)
    writer.close()
    assert stat.S_IMODE(os.stat(destination / "new").st_mode) == 0o755


def test_a_staging_directory_made_just_before_the_kill_goes_too(destination, monkeypatch):
    """Killed between making a staging directory and listing it (its device and inode are
    known only once it exists): the intent listed before it was made names it (a test run
    under load left one behind)."""
    monkeypatch.setattr(leftovers_module.StagingList, "add", lambda *a: os._exit(0))
    pid = os.fork()
    if pid == 0:
        try:
            writer, _ = open_writer(destination)
            writer.make_dir((b"shared",), DIR_META)
            handle = writer.start_file((b"shared", b"f"), FILE_META)
            writer.write(handle, 0, b"fre")  # makes shared's staging: killed as it lists it
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    monkeypatch.undo()
    stagings = [where / name for where in (destination, destination / "shared")
                for name in leftovers(where) if name.endswith("-staging")]
    assert len(stagings) == 1 and not os.listdir(stagings[0])  # made, empty, not listed
    writer, problems = open_writer(destination)
    writer.close()
    assert leftovers(destination / "shared") == [] and leftovers(destination) == []
    assert problems.warnings == [f"{stagings[0]}: removed: left empty by an interrupted "
                                 "restore"]


def test_a_staging_directory_made_as_a_signal_arrives_is_removed_by_the_restore(destination):
    """SIGTERM raises Terminated wherever the main thread is: just after the mkdir of a
    staging directory, it was not yet among those close() removes, and stayed (a test run
    under load: test_a_terminated_restore_removes_its_temporary_files)."""

    class Terminated(BaseException):
        pass

    class SignalAfterStagingMkdir(set):
        def add(self, path):
            if path[-1].endswith(b"-staging"):
                raise Terminated
            super().add(path)

    writer, problems = open_writer(destination)
    writer._made = SignalAfterStagingMkdir(writer._made)
    writer.make_dir((b"shared",), DIR_META)
    with pytest.raises(Terminated):
        handle = writer.start_file((b"shared", b"f"), FILE_META)
        writer.write(handle, 0, b"fre")  # makes shared's staging directory
    writer.close()
    assert leftovers(destination / "shared") == [] and leftovers(destination) == []
    assert problems.warnings == []


@contextmanager
def restoring(destination: Path):
    """Meanwhile, a restore into `destination` runs in a child process (restore_half_a_file,
    whose pid is given), holding its locks."""
    go_on_r, go_on_w = os.pipe()
    try:
        pid = restore_half_a_file(destination, go_on_reading=go_on_r)
        try:
            yield pid
        finally:
            os.write(go_on_w, b"!")
            os.waitpid(pid, 0)
    finally:
        os.close(go_on_r)
        os.close(go_on_w)


def test_a_restore_into_a_destination_another_is_restoring_is_refused(destination):
    """What the running restore holds is left alone: the second one does nothing at all
    (destination_lock.py)."""
    with restoring(destination) as pid:
        held = leftovers(destination), leftovers(destination / "shared")
        with pytest.raises(CorsoError, match=f"^another restore into {destination} is "
                                             "running") as refused:
            open_writer(destination)
        assert f"(process {pid}, " in str(refused.value)  # which one: see the next test
        assert (leftovers(destination), leftovers(destination / "shared")) == held
    writer, problems = open_writer(destination)  # that restore is gone now
    writer.close()
    assert leftovers(destination) == [] and leftovers(destination / "shared") == []
    assert len(problems.warnings) == 1
    assert os.listdir(destination) == ["shared"]  # no lock file, nor anything else


def test_a_lock_another_program_holds_is_named_with_its_process(destination, tmp_path):
    """flock is advisory and anyone's: a lock on the destination, or on a directory above it,
    refuses the restore all the same, and the line names the process holding it (by its
    name only: a command line may hold a passphrase), so that a program that is not a restore
    can be told from one."""
    program = tmp_path / "lock-holder"
    program.write_text("import fcntl, os, sys, time\n"
                       "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                       "fcntl.flock(fd, getattr(fcntl, sys.argv[2]))\n"
                       "print('locked', flush=True)\n"
                       "time.sleep(60)\n")
    for into, how in ((destination, "LOCK_SH"), (destination / "shared", "LOCK_EX")):
        holder = subprocess.Popen([sys.executable, str(program), str(destination), how],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "locked\n"
            name = Path(f"/proc/{holder.pid}/comm").read_text().strip()
            with pytest.raises(CorsoError) as refused:
                open_writer(into)
            assert str(refused.value).startswith(
                f"another restore into {destination} is running")
            assert str(refused.value).endswith(
                f"wait for it to end (process {holder.pid}, {name}, holds its lock)")
            assert leftovers(into) == [] and os.listdir(destination) == ["shared"]
        finally:
            holder.kill()
            holder.wait()
            holder.stdout.close()


def test_a_restore_into_a_directory_below_one_being_restored_is_refused(destination, tmp_path):
    """Run together, the one into D/shared filled the directories the one into D builds there.
    Nor does one whose destination is missing make it first, and a symlink to a directory in D
    is no way round (the directories above are reached by "..")."""
    (tmp_path / "link").symlink_to(destination / "shared")
    with restoring(destination):
        held = leftovers(destination), leftovers(destination / "shared")
        for inner in (destination / "shared", tmp_path / "link", destination / "new" / "sub"):
            with pytest.raises(CorsoError, match=re.escape(
                    f"another restore into {destination} is running, and {inner} is in it: "
                    "wait for it to end")):
                open_writer(inner)
        assert (leftovers(destination), leftovers(destination / "shared")) == held
        assert not (destination / "new").exists()
    writer, _ = open_writer(destination / "new" / "sub")
    writer.close()


def test_a_restore_into_a_directory_above_one_being_restored_is_refused(destination, tmp_path):
    with restoring(destination / "shared"):
        held = leftovers(destination / "shared")
        for outer in (destination, tmp_path):
            with pytest.raises(CorsoError, match=re.escape(
                    f"another restore into {outer} is running, or one into a directory in it: "
                    "wait for it to end")):
                open_writer(outer)
        assert leftovers(destination / "shared") == held and leftovers(destination) == []
    writer, _ = open_writer(destination)
    writer.close()


def test_restores_side_by_side_run_together(destination):
    """Into D/other and D/shared, or D/new/sub made meanwhile: they share the lock on D."""
    (destination / "other").mkdir()
    with restoring(destination / "other"):
        for beside in (destination / "shared", destination / "new" / "sub"):
            writer, problems = open_writer(beside)
            writer.close()
            assert problems.warnings == problems.errors == []


def restored_together(destinations: list[Path], monkeypatch) -> dict[Path, object]:
    """Start restores into `destinations` at once, in threads: each paused once it has locked
    the directories above its missing destination, until all have (so none has made anything
    yet), then once it has made its destination, before it takes its own locks; then let each
    take them in turn, the next once the previous one holds them or was refused. Its writer,
    or the CorsoError."""
    looked = threading.Barrier(len(destinations), timeout=10)
    made = threading.Barrier(len(destinations) + 1, timeout=10)
    turns = {str(d): threading.Event() for d in destinations}
    climb, take = DestinationLock._climb, DestinationLock.take

    def climb_together(lock, fd, mode):
        climb(lock, fd, mode)
        if mode == fcntl.LOCK_SH:  # above a missing destination (the writer's are LOCK_EX)
            looked.wait()

    def take_in_turn(lock, root_fd):
        made.wait()
        assert turns[threading.current_thread().name].wait(10)
        take(lock, root_fd)

    monkeypatch.setattr(DestinationLock, "_climb", climb_together)
    monkeypatch.setattr(DestinationLock, "take", take_in_turn)
    outcomes = {}

    def restore(into):
        try:
            outcomes[into] = open_writer(into)[0]
        except CorsoError as e:
            outcomes[into] = e

    threads = [threading.Thread(target=restore, args=(d,), name=str(d)) for d in destinations]
    for thread in threads:
        thread.start()
    made.wait()
    for thread in threads:
        turns[thread.name].set()
        thread.join()
    return outcomes


def test_a_restore_refused_for_one_into_a_directory_above_made_nothing_in_it(tmp_path,
                                                                             monkeypatch):
    """D and D/sub both missing: an empty 0700 D/sub made by the refused restore into it
    would be entered by the one into D (--collisions skip), keeping that mode."""
    outer, inner = tmp_path / "D", tmp_path / "D" / "sub"
    outcomes = restored_together([outer, inner], monkeypatch)
    refused = [d for d, outcome in outcomes.items() if isinstance(outcome, CorsoError)]
    assert len(refused) == 1
    assert inner.exists() == (refused != [inner])
    for outcome in outcomes.values():
        if not isinstance(outcome, CorsoError):
            outcome.close()


def test_restores_into_missing_directories_side_by_side_run_together(tmp_path, monkeypatch):
    destinations = [tmp_path / "D" / "a", tmp_path / "D" / "b" / "c"]
    outcomes = restored_together(destinations, monkeypatch)
    for writer in outcomes.values():
        writer.close()
    assert sorted(os.listdir(tmp_path / "D")) == ["a", "b"]


def test_a_restore_that_ended_lets_the_next_one_in(destination):
    writer, _ = open_writer(destination)
    with pytest.raises(CorsoError):
        open_writer(destination)  # in the same process too
    writer.close()
    assert os.listdir(destination) == ["shared"]
    writer, problems = open_writer(destination)
    writer.close()
    assert problems.warnings == [] and os.listdir(destination) == ["shared"]


TOKEN = ".corso-restore-0123456789abcdef-"


def forged_list(destination: Path, *records: tuple[Path, str]) -> Path:
    """A list naming (staging directory, path of its parent) as a restore writes one."""
    body = b"".join(b"%d %d %s\0" % (os.stat(staging).st_dev, os.stat(staging).st_ino,
                                      os.fsencode(parent)) for staging, parent in records)
    path = destination / f"{TOKEN}staging-list"
    path.write_bytes(leftovers_module._HEADER + body)
    return path


def test_a_list_never_leads_through_a_symlink(destination, tmp_path):
    outside = tmp_path / "outside" / f"{TOKEN}staging"
    outside.mkdir(parents=True)
    (outside / "kept").write_bytes(b"x")
    (destination / "link").symlink_to(tmp_path / "outside")
    forged_list(destination, (outside, "link"))

    writer, problems = open_writer(destination)
    writer.close()
    assert (outside / "kept").read_bytes() == b"x"
    [warning] = problems.warnings
    assert warning.startswith(f"{destination / 'link' / (TOKEN + 'staging')}: left by an "
                              "interrupted restore, not removed: ")


def test_a_directory_renamed_onto_a_listed_name_is_not_removed(destination):
    """Whoever may rename entries in a shared destination renames the user's directory onto
    a dead restore's staging name: it is not the directory listed, and stays (a review got
    a whole project tree removed so)."""
    staging = destination / f"{TOKEN}staging"
    staging.mkdir()
    forged_list(destination, (staging, ""))
    staging.rmdir()
    (destination / "projects" / "code").mkdir(parents=True)
    (destination / "projects" / "code" / "main.c").write_bytes(b"int main;")
    (destination / "projects").rename(staging)

    writer, problems = open_writer(destination)
    writer.close()
    assert (staging / "code" / "main.c").read_bytes() == b"int main;"
    [warning] = problems.warnings
    assert warning.endswith("not removed: not the staging directory listed")


def test_a_file_renamed_to_a_lists_name_is_no_list(destination):
    """A file of the user's renamed to a list's name (it began with NUL: an icon) listed the
    top of the destination, whose staging name another rename could fill."""
    staging = destination / f"{TOKEN}staging"
    staging.mkdir()
    (staging / "mine").write_bytes(b"x")
    (destination / f"{TOKEN}staging-list").write_bytes(b"\0\0\1\0icon")
    writer, problems = open_writer(destination)
    writer.close()
    assert (staging / "mine").exists() and problems.warnings == []


def test_what_a_finished_restore_left_is_not_a_leftover(destination):
    """A restore that ran to its end says where it left what it could not put in place; the
    next restore removed it as 'left by an interrupted restore' (a review)."""
    writer, problems = open_writer(destination)
    writer.make_dir((b"shared",), DIR_META)
    handle = writer.start_file((b"shared", b"f"), FILE_META)
    writer.write(handle, 0, b"fresh")
    assert writer.finish_file(handle) is True
    [staging] = leftovers(destination / "shared")
    (destination / "shared" / staging / "kept").write_bytes(b"x")  # it cannot remove this one
    writer.close()
    assert any("not removed" in w for w in problems.warnings)
    assert leftovers(destination) == []  # its list is gone
    writer, problems = open_writer(destination)
    writer.close()
    assert (destination / "shared" / staging / "kept").exists() and problems.warnings == []


@pytest.mark.timeout(20)
def test_a_fifo_named_as_a_list_neither_blocks_nor_is_touched(destination):
    fifo = destination / ".corso-restore-0123456789abcdef-staging-list"
    os.mkfifo(fifo)
    writer, problems = open_writer(destination)
    writer.close()
    assert fifo.is_fifo() and problems.warnings == []


def test_without_working_locks_a_restore_goes_on_unlisted(destination, monkeypatch):
    """A filesystem whose flock fails (some FUSE ones): the restore works as before lists
    and its lock, and leaves neither behind."""
    def failing(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(leftovers_module.fcntl, "flock", failing)
    writer, problems = open_writer(destination)
    writer.make_dir((b"shared",), DIR_META)
    handle = writer.start_file((b"shared", b"f"), FILE_META)
    writer.write(handle, 0, b"fresh")
    assert writer.finish_file(handle) is True
    writer.close()
    assert (destination / "shared" / "f").read_bytes() == b"fresh"
    assert os.listdir(destination) == ["shared"] and problems.errors == []  # nor a lock
