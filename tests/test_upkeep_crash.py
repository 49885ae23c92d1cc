"""Crash test: maintenance, backup and repair stop dead after their n-th write, for every n
(test_store's CrashingStorage, the test-only crash-after-N-writes setting: every write from
the n-th on fails, as a killed process writes nothing more). After each crash verify
--read-data is clean (or repair makes it clean), no completed
backup is lost, and a maintenance run afterwards finishes the job."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from test_store import CrashingStorage, SimulatedCrash  # fails every write from the n-th on
from test_upkeep_maintenance import OWNER, back_up_days
from test_upkeep_verify import PASSPHRASE, back_up, make_tree, restore_into
from trees import TEST_CHUNK, snapshot

from corso_core.repo.chunker import TEST_CHUNK_SIZE_ENV
from corso_core.repo.manifests import delete_manifests, list_manifests
from corso_core.repo.repository import init_repository, open_repository
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.upkeep.maintenance import SAFETY_WINDOW_ENV, run_maintenance
from corso_core.upkeep.repair import run_repair
from corso_core.upkeep.verify import ALL, verify


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A repository after four backups of a changing tree, the two oldest deleted: garbage
    packs, partly used packs (rewritten), several index blobs. And the newest tree."""
    base = tmp_path_factory.mktemp("history")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TEST_CHUNK_SIZE_ENV, str(TEST_CHUNK))
        mp.setenv("CORSO_CACHE_DIR", str(base / "cache"))
        repository = init_repository(FilesystemStorage(str(base / "repo")), PASSPHRASE)
        tree = make_tree(base / "tree", 11, files=6)
        ids = back_up_days(repository, tree, 4, seed=200)
        delete_manifests(repository, ids[:2])
    return base / "repo", ids[2:], tree, snapshot(tree)


def crashed_copy(history, tmp_path: Path, n: int):
    """(a crashing repository after n writes, the same repository without crashes)."""
    source = history[0]
    root = tmp_path / f"crash-{n}"
    shutil.copytree(source, root)
    crashing = open_repository(CrashingStorage(str(root), n), PASSPHRASE)
    return crashing, open_repository(FilesystemStorage(str(root)), PASSPHRASE)


def check_whole(repository, history, tmp_path: Path, n: int) -> None:
    _, kept, tree, taken = history
    report = verify(repository, ALL)
    assert report.clean, (n, report.as_dict())
    # No completed backup is lost (a backup that crashed after its manifest did complete).
    assert set(kept) <= {m["id"] for m in list_manifests(repository)}
    destination = tmp_path / f"restore-{n}"
    assert not restore_into(repository, kept[-1], destination).errors
    assert snapshot(destination / tree.name) == taken


def crash_every_write(history, tmp_path, action, label: str, check_after_crash=True) -> int:
    """Run `action(repository)` crashing after 0, 1, 2... writes until it completes; the
    number of crash points."""
    n = 0
    while True:
        crashing, plain = crashed_copy(history, tmp_path / label, n)
        try:
            action(crashing)
        except SimulatedCrash:
            if check_after_crash:
                check_whole(plain, history, tmp_path / label, n)
        else:
            return n
        run_repair(plain)
        run_maintenance(plain, safety="none", **OWNER)
        check_whole(plain, history, tmp_path / label, n)
        n += 1


def test_crash_at_every_write_of_maintenance_backup_and_repair(history, tmp_path, small_chunks,
                                                               monkeypatch):
    monkeypatch.setenv(SAFETY_WINDOW_ENV, "0")
    points = crash_every_write(
        history, tmp_path, lambda r: run_maintenance(r, safety="none", **OWNER), "none")
    points += crash_every_write(
        history, tmp_path, lambda r: run_maintenance(r, safety="none", max_unused=0, **OWNER),
        "rewrite-all")
    points += crash_every_write(
        history, tmp_path, lambda r: run_maintenance(r, safety="full", **OWNER), "full")
    points += crash_every_write(
        history, tmp_path, lambda r: run_maintenance(r, mode="metadata", **OWNER), "metadata")

    def plan_then_finish(repository):
        """Phase 1 runs whole; the run that finishes the plan (phase 2) crashes."""
        plain = open_repository(FilesystemStorage(repository.storage.root), PASSPHRASE)
        assert run_maintenance(plain, **OWNER).plans_made == 1
        assert run_maintenance(repository, **OWNER).plans_finished == 1

    points += crash_every_write(history, tmp_path, plan_then_finish, "phase2")
    points += crash_every_write(
        history, tmp_path, lambda r: back_up(r, make_tree(tmp_path / f"t{random.random()}", 5)),
        "backup")

    def lose_index_then_repair(repository):
        for key in [i.key for i in repository.storage.list("index/")][:1]:
            FilesystemStorage.delete(repository.storage, key)  # the damage, not a crash point
        run_repair(repository)

    points += crash_every_write(history, tmp_path, lose_index_then_repair, "repair",
                                check_after_crash=False)  # the index blob is lost: repair
    assert points >= 50, points


@pytest.mark.soak
def test_crash_at_random_writes_of_random_histories(tmp_path, small_chunks, monkeypatch):
    monkeypatch.setenv(SAFETY_WINDOW_ENV, "0")
    rng = random.Random(2026)
    for round_ in range(40):
        root = tmp_path / f"round-{round_}"
        repository = init_repository(FilesystemStorage(str(root / "repo")), PASSPHRASE)
        tree = make_tree(root / "tree", round_, files=rng.randint(2, 8))
        ids = back_up_days(repository, tree, rng.randint(2, 6), seed=rng.randrange(10**6))
        delete_manifests(repository, rng.sample(ids[:-1], rng.randint(0, len(ids) - 1)))
        history = (root / "repo", [ids[-1]], tree, snapshot(tree))
        crashing, plain = crashed_copy(history, root, rng.randint(0, 40))
        mode = rng.choice([{"safety": "none"}, {"safety": "full"}, {"mode": "metadata"}])
        try:
            run_maintenance(crashing, **mode, **OWNER)
        except SimulatedCrash:
            pass
        report = verify(plain, ALL)
        assert report.clean, (round_, report.as_dict())
        run_maintenance(plain, safety="none", **OWNER)
        assert verify(plain, ALL).clean
        restore_into(plain, ids[-1], root / "out")
        assert snapshot(root / "out" / tree.name) == snapshot(tree)
