"""What a restore killed outright leaves in its destination (its staging directories and their
list) is removed by the next restore into it (sources/files/leftovers.py): never what a
running restore holds, never anything reached through a symlink, and a list that cannot be
read safely is left alone."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from corso_core.engine.progress import Problems
from corso_core.sources.files import FILES
from corso_core.sources.files import leftovers as leftovers_module
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


def test_what_a_running_restore_holds_is_left_alone(destination):
    go_on_r, go_on_w = os.pipe()
    pid = restore_half_a_file(destination, go_on_reading=go_on_r)
    try:
        held = leftovers(destination), leftovers(destination / "shared")
        writer, problems = open_writer(destination)
        writer.close()
        assert (leftovers(destination), leftovers(destination / "shared")) == held
        assert problems.warnings == []
    finally:
        os.write(go_on_w, b"!")
        os.waitpid(pid, 0)
    writer, problems = open_writer(destination)  # that restore is gone now
    writer.close()
    assert leftovers(destination) == [] and leftovers(destination / "shared") == []
    assert len(problems.warnings) == 1


def test_a_list_never_leads_through_a_symlink(destination, tmp_path):
    token = ".corso-restore-0123456789abcdef-"
    (tmp_path / "outside" / f"{token}staging").mkdir(parents=True)
    (tmp_path / "outside" / f"{token}staging" / "kept").write_bytes(b"x")
    (destination / "link").symlink_to(tmp_path / "outside")
    (destination / f"{token}staging-list").write_bytes(b"link\0")

    writer, problems = open_writer(destination)
    writer.close()
    assert (tmp_path / "outside" / f"{token}staging" / "kept").read_bytes() == b"x"
    [warning] = problems.warnings
    assert warning.startswith(f"{destination / 'link' / (token + 'staging')}: left by an "
                              "interrupted restore, not removed: ")
    # Kept, for a later restore to try again: what it lists was not all removed.
    assert (destination / f"{token}staging-list").exists()


@pytest.mark.timeout(20)
def test_a_fifo_named_as_a_list_neither_blocks_nor_is_touched(destination):
    fifo = destination / ".corso-restore-0123456789abcdef-staging-list"
    os.mkfifo(fifo)
    writer, problems = open_writer(destination)
    writer.close()
    assert fifo.is_fifo() and problems.warnings == []


def test_without_working_locks_a_restore_goes_on_unlisted(destination, monkeypatch):
    """A filesystem whose flock fails (some FUSE ones): the restore works as before lists,
    and leaves no list behind."""
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
    assert leftovers(destination) == [] and problems.errors == []
