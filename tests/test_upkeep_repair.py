"""`corso repo repair`: lost or damaged index blobs are rebuilt from the packs' own headers;
backups whose data is gone are named as beyond repair, with the reason."""

from __future__ import annotations

import json
import shutil

from cli_fixtures import one_error_line
from test_backup_cli import connected, create  # noqa: F401 (connected is a fixture)
from test_upkeep_verify import (  # noqa: F401 (three_backups is a fixture)
    PASSPHRASE,
    blob_of,
    flip,
    make_tree,
    restore_into,
    three_backups,
)
from trees import snapshot

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
    assert report.removed == [blob_of(added["B"], "index")] and report.beyond_repair == {}
    assert verify(repository, ALL).clean
    for label, (backup_id, tree) in backups.items():
        assert not restore_into(repository, backup_id, tmp_path / label).errors
        assert snapshot(tmp_path / label / tree.name) == snapshot(tree)
    assert run_repair(repository).packs_indexed == 0  # nothing left to do


def test_a_lost_pack_is_beyond_repair_and_named(three_backups, tmp_path):  # noqa: F811
    repo, repository, backups, added = copy_of(three_backups, tmp_path)
    lost = blob_of(added["C"], "data")
    (repo / lost).unlink()
    report = run_repair(repository)
    [(backup_id, why)] = report.beyond_repair.items()
    assert backup_id == backups["C"][0] and "missing" in " ".join(why)
    assert report.packs_indexed == 0


def test_cli_repair(connected, corso, tmp_path):  # noqa: F811
    backup_id = create(corso, "--path", str(make_tree(tmp_path / "tree", 9)))
    [index] = [p for p in (connected / "index").iterdir()]
    index.unlink()
    one_error_line(corso("repo", "verify"), 1, "1 backup(s)")
    result = corso("repo", "repair", "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["packs_indexed"] == 2
    assert corso("repo", "verify", "--read-data").code == 0
    [pack] = [p for p in (connected / "data").rglob("*") if p.is_file()]
    pack.unlink()
    broken = corso("repo", "repair")
    one_error_line(broken, 1, "beyond repair")
    assert f"backup {backup_id} is beyond repair" in broken.out
