"""The guarantee: three clients back up changing trees in a loop (and delete old backups)
while two more run maintenance complete in a loop (two at once must be safe too), with a
short safety window. Afterwards
verify --read-data is clean and every remaining backup restores byte-identical. On the
filesystem backend and on SeaweedFS."""

from __future__ import annotations

import threading
import time

import pytest
from test_upkeep_maintenance import OWNER, edit
from test_upkeep_verify import PASSPHRASE, back_up, make_tree, restore_into
from trees import snapshot

from corso_core import plugins
from corso_core.repo.manifests import delete_manifests
from corso_core.repo.repository import init_repository, open_repository
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.upkeep.maintenance import SAFETY_WINDOW_ENV, run_maintenance
from corso_core.upkeep.verify import ALL, verify

KEEP = 2  # each client deletes its older backups, so maintenance has garbage to collect


def alongside(clients, maintainers) -> None:
    """Run each client in a thread of its own, and each maintainer in one that loops until
    every client is done (it is given that Event); then fail with any thread's error."""
    errors: list[BaseException] = []
    clients_done = threading.Event()

    def guarded(work, *args) -> None:
        try:
            work(*args)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    client_threads = [threading.Thread(target=guarded, args=(c,)) for c in clients]
    maintainer_threads = [threading.Thread(target=guarded, args=(m, clients_done))
                          for m in maintainers]
    for thread in maintainer_threads + client_threads:
        thread.start()
    for thread in client_threads:
        thread.join()
    clients_done.set()
    for thread in maintainer_threads:
        thread.join()
    assert not errors, errors


def race(open_storage, tmp_path, monkeypatch, window: float, rounds: int = 6) -> None:
    monkeypatch.setenv(SAFETY_WINDOW_ENV, str(window))
    pause = window / 2
    init_repository(open_storage(), PASSPHRASE)
    expected: dict[str, tuple] = {}  # backup ID -> (tree, snapshot when it was taken)
    totals = {"packs_deleted": 0, "plans_finished": 0, "runs": 0}
    totals_lock = threading.Lock()

    def client(number: int) -> None:
        repository = open_repository(open_storage(), PASSPHRASE)
        tree = make_tree(tmp_path / f"client-{number}" / "tree", number, files=5)
        mine: list[str] = []
        day = 0
        # On a slow machine maintenance may not have deleted anything yet after `rounds`: go on
        # (up to 4x) until it has, so the race always tests deletion beside running backups.
        while day < rounds or (totals["packs_deleted"] == 0 and day < 4 * rounds):
            if day:
                time.sleep(pause)  # time passes between backups, as windows do
                edit(tree, number * 100 + day)
            backup_id = back_up(repository, tree)
            expected[backup_id] = (tree, snapshot(tree))
            mine.append(backup_id)
            if len(mine) > KEEP:
                gone = mine.pop(0)
                delete_manifests(repository, [gone])
                del expected[gone]
            day += 1

    def maintainer(clients_done: threading.Event) -> None:
        repository = open_repository(open_storage(), PASSPHRASE)
        while not clients_done.is_set():
            report = run_maintenance(repository, **OWNER)
            with totals_lock:
                totals["packs_deleted"] += report.packs_deleted
                totals["plans_finished"] += report.plans_finished
                totals["runs"] += 1

    alongside([lambda n=n: client(n) for n in (1, 2, 3)], [maintainer, maintainer])

    repository = open_repository(open_storage(), PASSPHRASE)
    # Maintenance really deleted data while backups ran (the test is not hollow).
    assert totals["runs"] >= 3 and totals["packs_deleted"] >= 1, totals
    report = verify(repository, ALL)
    assert report.clean, report.as_dict()
    assert report.backups == 3 * KEEP == len(expected)
    for n, (backup_id, (tree, taken)) in enumerate(sorted(expected.items())):
        destination = tmp_path / f"restore-{n}"
        assert not restore_into(repository, backup_id, destination).errors
        assert snapshot(destination / tree.name) == taken, backup_id


def test_backups_and_maintenance_race_on_the_filesystem(tmp_path, small_chunks, monkeypatch):
    race(lambda: FilesystemStorage(str(tmp_path / "repo")), tmp_path, monkeypatch, 0.5)


def test_backups_and_maintenance_race_on_seaweedfs(seaweedfs, s3_prefix, small_chunks, tmp_path,
                                                    monkeypatch):
    # SeaweedFS gives whole-second mtimes: a window of 2 s is at least one full second.
    race(lambda: plugins.backend("s3").open(seaweedfs.values(s3_prefix)), tmp_path,
         monkeypatch, 2.0)


@pytest.mark.soak
def test_backups_and_maintenance_race_long(tmp_path, small_chunks, monkeypatch):
    race(lambda: FilesystemStorage(str(tmp_path / "repo")), tmp_path, monkeypatch, 0.3,
         rounds=40)
