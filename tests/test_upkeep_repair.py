"""`corso repo repair`: lost or damaged index blobs are rebuilt from the packs' own headers;
backups whose data is gone are named as incomplete, with the reason (a later backup
of the same data makes them whole); a damaged manifest
is named apart, with the way out (deleting it)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from cli_fixtures import one_error_line
from test_backup_cli import connected, create, damage_manifest  # noqa: F401 (a fixture)
from test_upkeep_verify import (  # noqa: F401 (three_backups is a fixture)
    PASSPHRASE,
    back_up,
    blob_of,
    flip,
    make_tree,
    restore_into,
    three_backups,
)
from trees import snapshot

from corso_core.errors import Corrupted
from corso_core.repo.repository import open_repository
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.upkeep.repair import run_repair
from corso_core.upkeep.verify import ALL, verify


def copy_of(three_backups, tmp_path):  # noqa: F811
    source, backups, added = three_backups
    shutil.copytree(source, tmp_path / "repo")
    repository = open_repository(FilesystemStorage(str(tmp_path / "repo")), PASSPHRASE)
    return tmp_path / "repo", repository, backups, added


def test_lost_and_damaged_index_blobs_are_rebuilt(three_backups, tmp_path):  # noqa: F811
    repo, repository, backups, added = copy_of(three_backups, tmp_path)
    (repo / blob_of(added["A"], "index")).unlink()
    flip(repo / blob_of(added["B"], "index"))
    assert len(verify(repository).damaged_backups) == 2

    report = run_repair(repository)
    assert report.packs_indexed == 4 and report.index_blobs_written == 1  # A's and B's packs
    assert report.removed == [blob_of(added["B"], "index")] and report.incomplete == {}
    assert verify(repository, ALL).clean
    for label, (backup_id, tree) in backups.items():
        assert not restore_into(repository, backup_id, tmp_path / label).errors
        assert snapshot(tmp_path / label / tree.name) == snapshot(tree)
    assert run_repair(repository).packs_indexed == 0  # nothing left to do


def test_a_lost_pack_makes_its_backups_incomplete_and_named(three_backups, tmp_path):  # noqa: F811
    repo, repository, backups, added = copy_of(three_backups, tmp_path)
    lost = blob_of(added["C"], "data")
    (repo / lost).unlink()
    report = run_repair(repository)
    [(backup_id, why)] = report.incomplete.items()
    assert backup_id == backups["C"][0] and "missing" in " ".join(why)
    assert report.packs_indexed == 0


def test_cli_repair(connected, corso, tmp_path):  # noqa: F811
    backup_id = create(corso, "--path", str(make_tree(tmp_path / "tree", 9)))
    [index] = [p for p in (connected / "index").iterdir()]
    index.unlink()
    one_error_line(corso("repo", "verify"), 1, "affecting 1 backup;",
                   "run corso repo repair to rebuild the index from the packs")
    result = corso("repo", "repair", "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["packs_indexed"] == 2
    assert corso("repo", "verify", "--read-data").code == 0
    [pack] = [p for p in (connected / "data").rglob("*") if p.is_file()]
    pack.unlink()
    broken = corso("repo", "repair")
    one_error_line(broken, 1, "1 backup cannot be restored whole",
                   "a file's missing data comes back when a backup of files that still "
                   "hold it stores it again")
    assert f"backup {backup_id} cannot be restored whole now:" in broken.out


def test_a_damaged_manifest_is_named_apart_from_lost_data(three_backups, tmp_path):  # noqa: F811
    repo, repository, backups, added = copy_of(three_backups, tmp_path)
    flip(repo / blob_of(added["A"], "manifest"))
    (repo / blob_of(added["C"], "data")).unlink()
    report = run_repair(repository)
    assert list(report.damaged_manifests) == [backups["A"][0]]
    assert "authentication failed" in report.damaged_manifests[backups["A"][0]]
    assert list(report.incomplete) == [backups["C"][0]]


def test_cli_repair_points_a_damaged_manifest_to_backup_delete(connected, corso, tmp_path):  # noqa: F811
    damaged = create(corso, "--path", str(make_tree(tmp_path / "tree", 9)))
    damage_manifest(connected, damaged)
    result = corso("repo", "repair")
    one_error_line(result, 1, "1 backup with a damaged manifest",
                   f"delete with corso backup delete files --backups {damaged}")
    assert "not in the repository any more" not in result.err
    assert f"backup {damaged} has a damaged manifest, which cannot be rebuilt" in result.out
    assert "its data may still be in the repository" in result.out
    report = json.loads(corso("repo", "repair", "--json").out)
    assert report["incomplete"] == {} and list(report["damaged_manifests"]) == [damaged]
    assert corso("backup", "delete", "files", "--backups", damaged).code == 0
    assert corso("repo", "repair").code == 0


def test_repair_read_data_lets_the_next_backup_store_a_damaged_chunk_again(
        connected, corso, tmp_path):  # noqa: F811
    """Without it, an unchanged file keeps the damaged chunk of the backup before (and any
    file deduplicates against it): every later backup is damaged too."""
    tree = make_tree(tmp_path / "tree", 11)
    time.sleep(1.1)  # past the "recent" window: the next backups trust the files' metadata
    first = create(corso, "--path", str(tree))
    [pack] = [p for p in (connected / "data").rglob("*") if p.is_file()]
    flip(pack)
    second = create(corso, "--path", str(tree))
    damaged = json.loads(corso("repo", "verify", "--read-data", "--json").out)
    assert set(damaged["damaged_backups"]) == {first, second}

    result = corso("repo", "repair", "--read-data", "--json")
    assert result.code == 1 and "cannot be restored whole" in result.err  # until a backup
    assert json.loads(result.out)["damaged_chunks_dropped"] == 1
    create(corso, "--path", str(tree))  # reads the file again: the chunk is stored again
    # Chunks are found by ID: the earlier backups read the new copy, and are whole again.
    assert corso("repo", "verify", "--read-data").code == 0
    assert corso("restore", "files", "--backup", first, "--destination",
                 str(tmp_path / "out")).code == 0
    assert snapshot(tmp_path / "out" / "tree") == snapshot(tree)



def test_a_lost_pack_is_forgotten_so_the_next_backup_stores_its_chunks_again(
        three_backups, tmp_path):  # noqa: F811
    """Repair kept a lost pack's index entries: every later backup of the same files
    deduplicated against them, exited 0, and could not be restored (exploratory test)."""
    repo, repository, backups, added = copy_of(three_backups, tmp_path)
    lost = blob_of(added["C"], "data")
    (repo / lost).unlink()
    report = run_repair(repository)
    assert report.lost_packs_forgotten == [lost]
    assert list(report.incomplete) == [backups["C"][0]]  # what it held is gone
    again = back_up(repository, backups["C"][1])
    tree = backups["C"][1]
    assert not restore_into(repository, again, tmp_path / "out").errors
    assert snapshot(tmp_path / "out" / tree.name) == snapshot(tree)
    assert verify(repository).clean  # C heals too: the same chunks, stored again


def test_a_pack_cut_short_damages_the_backups_using_what_it_lost(three_backups, tmp_path):  # noqa: F811
    """verify said '1 damaged blob(s) affecting 0 backup(s)', repair exited 0, and a
    restore failed 42 files (exploratory test)."""
    repo, repository, backups, added = copy_of(three_backups, tmp_path)
    pack = repo / blob_of(added["C"], "data")
    os.truncate(pack, pack.stat().st_size // 2)
    backup_id, tree = backups["C"]
    assert list(verify(repository).damaged_backups) == [backup_id]
    report = run_repair(repository)
    assert report.damaged_chunks_dropped and list(report.incomplete) == [backup_id]
    again = back_up(repository, tree)
    assert not restore_into(repository, again, tmp_path / "out").errors
    assert snapshot(tmp_path / "out" / tree.name) == snapshot(tree)


def test_a_lost_tree_pack_stops_the_next_backup_until_repair(three_backups, tmp_path):  # noqa: F811
    """The backup builds on its previous one's trees: one lost stops it, saying what to do
    (it said only that the pack was missing); after repair it reads the files again."""
    repo, repository, backups, added = copy_of(three_backups, tmp_path)
    (repo / blob_of(added["C"], "tree")).unlink()
    tree = backups["C"][1]
    with pytest.raises(Corrupted, match="in a tree of the previous backup, which this one "
                                        "builds on; run corso repo verify, then corso repo "
                                        "repair --read-data"):
        back_up(repository, tree)
    run_repair(repository)
    again = back_up(repository, tree)
    assert not restore_into(repository, again, tmp_path / "out").errors
    assert set(verify(repository).damaged_backups) <= {backups["C"][0]}  # only the old one


def test_a_backup_stored_while_repair_lists_is_not_taken_for_lost(repository, tmp_path):
    """Repair lists the packs, then the index blobs: a backup that stores a pack and its index
    blob in between had its fresh pack 'forgotten' and was named incomplete (a review)."""
    back_up(repository, make_tree(tmp_path / "old", 1))
    storage = repository.storage
    storage_list = storage.list
    done = []

    def listing(prefix=""):
        if prefix == "index/" and not done:  # packs listed already: a backup runs now
            done.append(None)  # (its own listing of the index comes through here too)
            done[0] = back_up(repository, make_tree(tmp_path / "new", 2))
        return storage_list(prefix)

    storage.list = listing
    try:
        report = run_repair(repository)
    finally:
        storage.list = storage_list
    assert done and report.lost_packs_forgotten == [] and report.incomplete == {}
    assert not restore_into(repository, done[0], tmp_path / "out").errors
