"""`corso restore files` at the edges of what the system allows: a low open-files limit, a full
destination, and a restore as a user who is not root."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess

import pytest
import test_backup_cli
from cli_fixtures import CORSO, one_error_line
from test_backup_cli import create, unprivileged
from trees import snapshot

from corso_core.errors import Incomplete

NOBODY = 65534
# The fixtures this file shares with test_backup_cli.py:
connected = test_backup_cli.connected
nobodys_work = test_backup_cli.nobodys_work


@pytest.mark.parametrize(("in_place", "limit"), [(False, 40), (True, 32)],
                         ids=["fresh", "in-place"])
def test_a_low_open_files_limit_still_restores_every_item(connected, corso, tmp_path, in_place,
                                                         limit):
    """The writer keeps directories open to write into them: it must keep no more than the
    limit leaves room for, whatever the number of directories, their depth, or hard links
    between distant ones; in place too (the tree's top there already: what the restore makes
    in it is built apart, then moved in)."""
    tree = tmp_path / "many"
    for n in range(300):
        (tree / f"d{n:03}").mkdir(parents=True)
        (tree / f"d{n:03}" / "a").write_bytes(b"a %d\n" % n)
        (tree / f"d{n:03}" / "b").write_bytes(os.urandom(3000))
    deep = tree.joinpath(*(f"a{n}" for n in range(12)))  # before d000: the first name
    deep.mkdir(parents=True)
    (deep / "linked").write_bytes(b"one file, two names\n")
    os.link(deep / "linked", tree / "d299" / "linked")
    backup_id = create(corso, "--path", str(tree))
    if in_place:
        (tmp_path / "out" / "many").mkdir(parents=True)
    limited = subprocess.run(
        [CORSO, "restore", "files", "--backup", backup_id, "--destination",
         str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    assert limited.returncode == 0 and limited.stderr == "", limited
    assert json.loads(limited.stdout)["errors"] == []
    assert snapshot(tmp_path / "out" / "many") == snapshot(tree)


def test_a_file_whose_owner_is_not_restored_loses_its_setuid_and_setgid_bits(
        corso, small_chunks, nobodys_work):
    """Restored by nobody, a setuid-1234 program would become a setuid-nobody one: a program
    that never was. Only the bit whose owner (group) is the backup's is kept; directories keep
    theirs (no privilege: the set-group-ID bit only hands their group to new entries)."""
    work = nobodys_work
    tree = work / "t"
    tree.mkdir()
    special = {"other-owner": (1234, 1234, 0o4755), "other-group": (NOBODY, 42, 0o6755),
               "nobodys": (NOBODY, NOBODY, 0o6755), "shared-dir": (0, 42, 0o2775)}
    for name, (uid, gid, mode) in special.items():
        if name.endswith("-dir"):
            (tree / name).mkdir()
        else:
            (tree / name).write_bytes(b"#!/bin/sh\nid\n")
        os.chown(tree / name, uid, gid)
        os.chmod(tree / name, mode)
    with unprivileged():
        assert corso("repo", "init", "filesystem", "--path", str(work / "repo")).code == 0
        backup_id = create(corso, "--path", str(tree))
        result = corso("restore", "files", "--backup", backup_id, "--destination",
                       str(work / "out"))
    assert result.code == 0, result
    assert result.err == (f"corso: warning: {work / 'out'}: setuid/setgid bits dropped from "
                          "files whose owner or group was not restored\n")
    modes = {name: stat.S_IMODE(os.stat(work / "out" / "t" / name).st_mode) for name in special}
    assert modes == {"other-owner": 0o755, "other-group": 0o4755, "nobodys": 0o6755,
                     "shared-dir": 0o2775}


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, for a destination that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_destination_stops_the_restore_in_one_line(connected, corso, tmp_path,
                                                          small_disk):
    """Every item after the first that finds no space would fail the same way: the restore
    stops there (no more downloading), removes its temporary files, and still gives the
    directories it made their metadata, so that a re-run once space is freed completes it."""
    tree = tmp_path / "t"
    for d in range(4):
        for f in range(10):
            (tree / f"d{d}").mkdir(parents=True, exist_ok=True)
            (tree / f"d{d}" / f"f{f}").write_bytes(os.urandom(100_000))
    backup_id = create(corso, "--path", str(tree))
    result = corso("restore", "files", "--backup", backup_id, "--destination", str(small_disk))
    assert result.code == Incomplete.exit_code, result
    [line] = result.err.splitlines()
    assert line.startswith(f"corso: error: restore of backup {backup_id} stopped: no space "
                           f"left on device ({small_disk}/t/d"), line
    assert result.out == ""
    leftovers = [name for _, dirs, files in os.walk(small_disk) for name in dirs + files
                 if name.startswith(".corso-restore-")]
    assert leftovers == []

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    again = corso("restore", "files", "--backup", backup_id, "--destination", str(small_disk))
    assert again.code == 0 and again.err == "", again
    assert (snapshot(small_disk / "t", with_dir_mtimes=False)
            == snapshot(tree, with_dir_mtimes=False))


def test_a_second_restore_as_a_user_enters_the_directories_it_locked_and_locks_them_again(
        corso, small_chunks, nobodys_work):
    """A re-run completes an interrupted restore. Directories the first run gave mode 000 or
    0100 (as the backup has them) cannot be listed by their owner: they are opened (u+rwx) for
    the restore, then given their mode back."""
    work = nobodys_work
    tree = work / "t"
    for name, mode in (("d000", 0o000), ("d0100", 0o100)):
        (tree / name / "inner").mkdir(parents=True)
        (tree / name / "inner" / "f").write_bytes(b"in %s\n" % name.encode())
        os.chmod(tree / name, mode)
    assert corso("repo", "init", "filesystem", "--path", str(work / "repo")).code == 0
    backup_id = create(corso, "--path", str(tree))  # as root: it reads the locked directories
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(work)], check=True)
    destination = str(work / "out")
    with unprivileged():
        first = corso("restore", "files", "--backup", backup_id, "--destination", destination)
        (work / "out" / "t" / "d0100" / "inner" / "f").unlink()  # as an interrupted run left it
        again = corso("restore", "files", "--backup", backup_id, "--destination", destination)
    assert first.code == 0 and first.err == "", first
    assert again.code == 0 and again.err == "", again
    assert again.out.startswith(f"Restored backup {backup_id}: 1 file, 5 dirs, 0 symlinks, "
                                "0 hard links; 1 skipped (--collisions skip), 0 failed.\n")
    modes = {name: stat.S_IMODE(os.stat(work / "out" / "t" / name).st_mode)
             for name in ("d000", "d0100")}
    assert modes == {"d000": 0o000, "d0100": 0o100}
    assert (work / "out" / "t" / "d0100" / "inner" / "f").read_bytes() == b"in d0100\n"


def test_a_destination_the_user_cannot_write_is_one_error(
        corso, small_chunks, nobodys_work):
    """It was "cannot create directory: Permission denied" for each top-level item, then
    "1 item not restored", exit 3, for someone else's and for one of the user's own that
    is read-only (the user's choice: only directories below it are opened up)."""
    work = nobodys_work
    (work / "t").mkdir()
    (work / "t" / "f").write_bytes(b"f\n")
    assert corso("repo", "init", "filesystem", "--path", str(work / "repo")).code == 0
    backup_id = create(corso, "--path", str(work / "t"))
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(work)], check=True)
    (work / "roots").mkdir(mode=0o755)
    os.chown(work / "roots", 0, 0)
    (work / "mine").mkdir(mode=0o555)
    os.chown(work / "mine", NOBODY, NOBODY)
    with unprivileged():
        refused = corso("restore", "files", "--backup", backup_id, "--destination",
                        str(work / "roots"))
        own = corso("restore", "files", "--backup", backup_id, "--destination",
                    str(work / "mine"))
    one_error_line(refused, 2, f"destination {work / 'roots'} is not writable by you (mode "
                               "0755, owner uid 0)")
    one_error_line(own, 2, f"destination {work / 'mine'} is not writable by you (mode 0555, "
                           f"owner uid {NOBODY})")
    assert os.listdir(work / "roots") == [] and os.listdir(work / "mine") == []


def test_a_second_restore_as_a_user_makes_what_is_missing_in_the_read_only_directories_it_left(
        corso, small_chunks, nobodys_work):
    """A re-run completes an interrupted restore (a full disk, Ctrl-C), whose first run gave
    directories their mode: in one of 0555 its owner may list and enter, but make nothing (its
    staging directory, a directory); in one of 0600 look up no name. They are opened up
    (u+rwx) for the restore, then given their mode back. A read-only directory of someone
    else's stays refused."""
    work = nobodys_work
    tree = work / "t"
    mine = {"files0555": 0o555, "dirs0555": 0o555, "d0600": 0o600}
    for name, mode in mine.items():
        (tree / name / "sub").mkdir(parents=True)
        (tree / name / "f").write_bytes(b"f of %s\n" % name.encode())
        (tree / name / "sub" / "g").write_bytes(b"g of %s\n" % name.encode())
        os.chmod(tree / name, mode)
    (tree / "theirs").mkdir()
    (tree / "theirs" / "f").write_bytes(b"f of theirs\n")
    assert corso("repo", "init", "filesystem", "--path", str(work / "repo")).code == 0
    backup_id = create(corso, "--path", str(tree))  # as root: it reads the 0600 directory
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(work)], check=True)
    out = work / "out" / "t"
    with unprivileged():
        first = corso("restore", "files", "--backup", backup_id, "--destination",
                      str(work / "out"))
    # As an interrupted run leaves them (removed as root: the directories are read-only).
    (out / "files0555" / "f").unlink()
    (out / "dirs0555" / "sub" / "g").unlink()
    (out / "dirs0555" / "sub").rmdir()
    (out / "d0600" / "f").unlink()
    (out / "theirs" / "f").unlink()
    os.chown(out / "theirs", 0, 0)
    os.chmod(out / "theirs", 0o555)
    with unprivileged():
        again = corso("restore", "files", "--backup", backup_id, "--destination",
                      str(work / "out"))
    assert first.code == 0 and first.err == "", first
    assert again.code == Incomplete.exit_code, again
    assert again.out.startswith(f"Restored backup {backup_id}: 3 files, 8 dirs, 0 symlinks, "
                                "0 hard links; 3 skipped (--collisions skip), 1 failed.\n"), again
    refused, error = again.err.splitlines()
    assert refused.startswith("corso: error: ") and "theirs/f" in refused, refused
    assert refused.endswith("Permission denied"), refused
    assert error.startswith(f"corso: error: restore of backup {backup_id} is incomplete"), error
    modes = {name: stat.S_IMODE(os.stat(out / name).st_mode) for name in [*mine, "theirs"]}
    assert modes == {**mine, "theirs": 0o555}
    assert os.stat(out / "theirs").st_uid == 0
    for name in mine:
        assert (out / name / "f").read_bytes() == b"f of %s\n" % name.encode()
        assert (out / name / "sub" / "g").read_bytes() == b"g of %s\n" % name.encode()
    leftovers = [name for _, dirs, files in os.walk(work / "out") for name in dirs + files
                 if name.startswith(".corso-restore-")]
    assert leftovers == []
