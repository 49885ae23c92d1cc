"""`corso restore files` at the edges of what the system allows: a low open-files limit, a full
destination, and a restore as a user who is not root."""

from __future__ import annotations

import json
import os
import resource
import subprocess

from cli_fixtures import CORSO
from test_backup_cli import connected, create  # noqa: F401 (a fixture)
from trees import snapshot


def test_a_low_open_files_limit_still_restores_every_item(connected, corso, tmp_path):
    """The writer keeps directories open to write into them: it must keep no more than the
    limit leaves room for, whatever the number of directories, their depth, or hard links
    between distant ones."""
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
    limited = subprocess.run(
        [CORSO, "restore", "files", "--backup", backup_id, "--destination",
         str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)))
    assert limited.returncode == 0 and limited.stderr == "", limited
    assert json.loads(limited.stdout)["errors"] == []
    assert snapshot(tmp_path / "out" / "many") == snapshot(tree)
