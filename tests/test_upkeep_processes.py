"""The guarantee between separate clients: three `corso` processes back up changing trees in a
loop (deleting their older backups) while two more run `corso repo maintenance` (complete) in a
loop (the same owner on two machines, as overlapping scheduled jobs: two runs at once), each
with its own config dir and cache, all on one repository, with the safety window
shortened by CORSO_TEST_SAFETY_WINDOW. Afterwards `repo verify --read-data` is clean and every
remaining backup restores byte-identical. On the filesystem backend and on SeaweedFS.

test_upkeep_concurrency.py races the same functions as threads of one process (fast, many
rounds); this one proves nothing is shared between the clients but the repository.

Both races are end-to-end checks, not the proof of the protocol's steps: the losing
interleavings are rare in short runs (with phase 2 changed to ignore running backups and to
delete planned packs still in use, three runs of each race passed). The deterministic tests
in test_upkeep_maintenance.py (two_phase_delete_waits…, a_backup_that_deduplicated…) fail
on that change."""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path

import pytest
from cli_fixtures import Result, run_subprocess
from test_upkeep_concurrency import alongside
from test_upkeep_maintenance import edit
from test_upkeep_verify import make_tree
from trees import snapshot

from corso_core.upkeep.maintenance import SAFETY_WINDOW_ENV

PASSPHRASE = "separate clients"
KEEP = 2  # each client deletes its older backups, so maintenance has garbage to collect


class Client:
    """One machine: its own config dir and cache; runs corso as a new process each time."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.env = {"CORSO_CONFIG_DIR": str(home / "config"),
                    "CORSO_CACHE_DIR": str(home / "cache"),
                    "CORSO_PASSPHRASE": PASSPHRASE, **env}

    def __call__(self, *args: str) -> Result:
        result = run_subprocess(*args, env=self.env)
        assert result.code == 0, (args, result)
        return result


def race(tmp_path: Path, location: list[str], window: float, rounds: int,
         env: dict[str, str]) -> None:
    """`location`: the backend and its flags, as `repo init` and `repo connect` take them."""
    env = {SAFETY_WINDOW_ENV: str(window), **env}
    machines = {name: Client(tmp_path / name, env)
                for name in ("client-1", "client-2", "client-3", "maint-1", "maint-2")}
    machines["client-1"]("repo", "init", *location, "--passphrase", PASSPHRASE)
    for name, machine in machines.items():
        if name != "client-1":
            machine("repo", "connect", *location, "--passphrase", PASSPHRASE)

    expected: dict[str, tuple] = {}  # backup ID -> (tree, snapshot when it was taken)
    deleted_packs: list[int] = []

    def client(number: int) -> None:
        run = machines[f"client-{number}"]
        tree = make_tree(tmp_path / f"tree-{number}" / "tree", number, files=5)
        mine: list[str] = []
        day = 0
        # On a slow machine maintenance may not have deleted anything yet after `rounds`: go on
        # (up to 4x) until it has, so the race always tests deletion beside running backups.
        while day < rounds or (sum(deleted_packs) == 0 and day < 4 * rounds):
            if day:
                time.sleep(window / 2)  # time passes between backups, as windows do
                edit(tree, number * 100 + day)
            created = run("backup", "create", "files", "--path", str(tree), "--json")
            backup_id = json.loads(created.out)["id"]
            expected[backup_id] = (tree, snapshot(tree))
            mine.append(backup_id)
            if len(mine) > KEEP:
                gone = mine.pop(0)
                run("backup", "delete", "files", "--backups", gone)
                del expected[gone]
            day += 1

    def maintainer(name: str, clients_done: threading.Event) -> None:
        while not clients_done.is_set():
            report = machines[name]("repo", "maintenance", "--mode", "complete", "--json",
                                    "--user", "upkeep", "--host", "scheduler")
            deleted_packs.append(json.loads(report.out)["packs_deleted"])

    alongside([lambda n=n: client(n) for n in (1, 2, 3)],
              [functools.partial(maintainer, m) for m in ("maint-1", "maint-2")])
    # Maintenance really deleted packs while backups ran (else the test proves nothing).
    assert len(deleted_packs) >= 2 and sum(deleted_packs) >= 1, deleted_packs

    checker = machines["maint-1"]
    verified = json.loads(checker("repo", "verify", "--read-data", "--json").out)
    assert verified["backups"] == 3 * KEEP == len(expected), verified
    for n, (backup_id, (tree, taken)) in enumerate(sorted(expected.items())):
        destination = tmp_path / f"restore-{n}"
        checker("restore", "files", "--backup", backup_id, "--destination", str(destination))
        assert snapshot(destination / tree.name) == taken, backup_id


def test_separate_processes_race_on_the_filesystem(tmp_path, small_chunks):
    race(tmp_path, ["filesystem", "--path", str(tmp_path / "repo")], 1.0, rounds=4, env={})


def test_separate_processes_race_on_seaweedfs(seaweedfs, s3_prefix, small_chunks, tmp_path):
    # SeaweedFS gives whole-second mtimes: a window of 2 s is at least one full second.
    keys = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key,
            "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}
    race(tmp_path, ["s3", *seaweedfs.flags(s3_prefix)], 2.0, rounds=4, env=keys)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_separate_processes_race_long(seaweedfs, s3_prefix, small_chunks, tmp_path):
    keys = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key,
            "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}
    race(tmp_path / "fs", ["filesystem", "--path", str(tmp_path / "repo")], 1.0, rounds=25,
         env={})
    race(tmp_path / "s3", ["s3", *seaweedfs.flags(s3_prefix)], 2.0, rounds=25, env=keys)
