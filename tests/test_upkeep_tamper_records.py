"""The tamper test for the blobs that hold no backup data: deletion plans (`plans/`), session
records (`sessions/`) and upkeep records (`upkeep/`). Flip a byte, truncate, delete, swap two
of a kind: verify names the blob, maintenance never carries out a damaged plan, and the
backups still restore."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_upkeep_maintenance import maintain
from test_upkeep_verify import PASSPHRASE, back_up, flip, make_tree, restore_into, swap, truncate
from trees import TEST_CHUNK, snapshot

from corso_core.errors import Corrupted
from corso_core.repo import names
from corso_core.repo.chunker import TEST_CHUNK_SIZE_ENV
from corso_core.repo.manifests import delete_manifests
from corso_core.repo.repository import init_repository, open_repository
from corso_core.repo.sessions import SessionRecord
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.upkeep.inventory import list_blobs
from corso_core.upkeep.maintenance import SAFETY_WINDOW_ENV
from corso_core.upkeep.verify import ALL, verify

#: Kinds whose blobs maintenance may delete or rewrite because of a plan.
ACTED_ON = (names.DATA_PACK, names.TREE_PACK, names.INDEX, names.MANIFEST, names.PLAN)


@pytest.fixture(scope="module")
def waiting_plans(tmp_path_factory):
    """Backups A and B kept; C and D deleted, each by its own maintenance run, into two plans
    that wait for two live sessions; upkeep records of maintenance and verify."""
    base = tmp_path_factory.mktemp("plans")
    sessions = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TEST_CHUNK_SIZE_ENV, str(TEST_CHUNK))
        mp.setenv("CORSO_CACHE_DIR", str(base / "cache"))
        mp.setenv(SAFETY_WINDOW_ENV, "0")  # every pack old enough to plan
        repository = init_repository(FilesystemStorage(str(base / "repo")), PASSPHRASE)
        backups = {label: (back_up(repository, make_tree(base / f"tree-{label}", seed)),
                           base / f"tree-{label}")
                   for label, seed in (("A", 1), ("B", 2), ("C", 3), ("D", 4))}
        sessions = [SessionRecord(repository, refresh_seconds=3600) for _ in range(2)]
        for session in sessions:
            session.start()
        for label in ("C", "D"):
            delete_manifests(repository, [backups.pop(label)[0]])
            assert maintain(repository).plans_made == 1
        assert verify(repository, ALL).clean
        plans = sorted(list_blobs(repository.storage, (names.PLAN,))[names.PLAN])
        assert len(plans) == 2
        yield base / "repo", backups, plans, [s.session_id for s in sessions]
    for session in sessions:
        session.close()


def acted_on(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for kind in ACTED_ON
            for p in (repo / names.prefix(kind)).rglob("*") if p.is_file()}


def tamper(repo: Path, target: str, other: str, damage: str) -> None:
    if damage == "delete":
        (repo / target).unlink()
    elif damage == "swap":
        swap(repo / target, repo / other)
    else:
        {"flip": flip, "truncate": truncate}[damage](repo / target)


def targets(kind: str, plans: list[str], sessions: list[str]) -> tuple[str, str]:
    """The blob to damage and another of its kind to swap it with."""
    if kind == names.PLAN:
        return names.key(names.PLAN, plans[0]), names.key(names.PLAN, plans[1])
    if kind == names.SESSION:
        return names.key(names.SESSION, sessions[0]), names.key(names.SESSION, sessions[1])
    return names.key(names.UPKEEP, "maintained"), names.key(names.UPKEEP, "verified")


def tampered_copy(waiting_plans, tmp_path: Path, kind: str, damage: str):
    """A copy of the fixture's repository with one blob of `kind` damaged: (its root, the
    repository opened, the damaged blob, the other of its kind)."""
    source, _, plans, sessions = waiting_plans
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    target, other = targets(kind, plans, sessions)
    tamper(repo, target, other, damage)
    return repo, open_repository(FilesystemStorage(str(repo)), PASSPHRASE), target, other


def assert_backups_restore(repository, backups, tmp_path: Path) -> None:
    for label, (backup_id, tree) in backups.items():
        destination = tmp_path / f"restore-{label}"
        assert not restore_into(repository, backup_id, destination).errors
        assert snapshot(destination / tree.name) == snapshot(tree)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "swap"])
@pytest.mark.parametrize("kind", [names.PLAN, names.SESSION, names.UPKEEP])
def test_tampered_record_is_named_and_backups_restore(waiting_plans, tmp_path, kind, damage):
    _, backups, _, _ = waiting_plans
    _, repository, target, other = tampered_copy(waiting_plans, tmp_path, kind, damage)

    report = verify(repository, ALL)

    assert report.damaged_backups == {}, report.as_dict()
    if damage == "delete":
        # Not damage anyone can see: a finished plan and an ended session's record are
        # deleted, and an upkeep record is absent until its command runs. A deleted plan's
        # packs are left unindexed, for maintenance to reclaim once no backup uses them.
        assert report.clean, report.problems
        assert report.unindexed_packs == (2 if kind == names.PLAN else 0)
    else:
        named = {p["blob"] for p in report.problems}
        assert named == ({target, other} if damage == "swap" else {target}), report.problems
    assert_backups_restore(repository, backups, tmp_path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_maintenance_never_carries_out_a_damaged_plan(waiting_plans, tmp_path, damage):
    plans = waiting_plans[2]
    repo, repository, _, _ = tampered_copy(waiting_plans, tmp_path, names.PLAN, damage)
    before = acted_on(repo)

    # --safety none would carry out every plan at once, sessions or not.
    damaged = "|".join(plans) if damage == "swap" else plans[0]
    with pytest.raises(Corrupted, match=f"nothing deleted: deletion plan ({damaged}) is"):
        maintain(repository, safety="none")

    assert acted_on(repo) == before


def test_sound_plans_are_carried_out(waiting_plans, tmp_path):
    """The control for the test above: the same run on the untouched copy deletes the packs."""
    source, backups, _, _ = waiting_plans
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    repository = open_repository(FilesystemStorage(str(repo)), PASSPHRASE)
    report = maintain(repository, safety="none")
    assert report.plans_finished == 2 and report.packs_deleted >= 4
    assert verify(repository, ALL).clean
    assert_backups_restore(repository, backups, tmp_path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_a_damaged_session_record_still_holds_the_plans(waiting_plans, tmp_path, damage):
    """Maintenance counts a session by its listing alone: a record that no longer decodes is
    still a live client, and the plans made while it ran keep waiting for it."""
    repo, repository, _, _ = tampered_copy(waiting_plans, tmp_path, names.SESSION, damage)
    before = acted_on(repo) - {p for p in acted_on(repo) if p.startswith("index/")}

    report = maintain(repository)

    assert report.plans_finished == 0 and report.plans_waiting == 2
    assert report.packs_deleted == 0
    assert before <= acted_on(repo)
