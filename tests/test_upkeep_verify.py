"""`corso repo verify`: the tamper test (flip a byte, truncate, delete, swap two blobs of the
same kind, for every kind of blob) names what is affected, unaffected backups still restore,
and nothing is restored from data that failed authentication; subsets; the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cli_fixtures import one_error_line
from test_backup_cli import connected, create  # noqa: F401 (connected is a fixture)
from trees import TEST_CHUNK, snapshot

from corso_core.engine.backup import BackupOptions, run_backup
from corso_core.engine.progress import Problems
from corso_core.engine.restore import run_restore
from corso_core.errors import CorsoError, PermissionDenied, UsageError
from corso_core.repo.chunker import TEST_CHUNK_SIZE_ENV
from corso_core.repo.repository import init_repository, open_repository
from corso_core.sources.files import FILES
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.upkeep.verify import ALL, parse_subset, verify

PASSPHRASE = "upkeep test passphrase"


def make_tree(root: Path, seed: int, files: int = 4) -> Path:
    """A small tree of incompressible files, different for each seed."""
    rng = __import__("random").Random(seed)
    (root / "sub").mkdir(parents=True)
    for i in range(files):
        where = root / "sub" if i % 2 else root
        (where / f"file-{i}.bin").write_bytes(rng.randbytes(TEST_CHUNK * (1 + i)))
    return root


def back_up(repository, tree: Path) -> str:
    return run_backup(repository, FILES, {"path": [str(tree)], "exclude": ()},
                      BackupOptions()).backup_id


def restore_into(repository, backup_id: str, destination: Path) -> Problems:
    problems = Problems()
    run_restore(repository, FILES, {"destination": str(destination)}, backup_id, [], "skip",
                problems)
    return problems


def keys_of(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def three_backups(tmp_path_factory):
    """A repository with backups A, B, C of three unrelated trees, and which blobs each added."""
    base = tmp_path_factory.mktemp("three")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TEST_CHUNK_SIZE_ENV, str(TEST_CHUNK))
        mp.setenv("CORSO_CACHE_DIR", str(base / "cache"))
        storage = FilesystemStorage(str(base / "repo"))
        repository = init_repository(storage, PASSPHRASE)
        backups, added = {}, {}
        for label, seed in (("A", 1), ("B", 2), ("C", 3)):
            before = keys_of(base / "repo")
            tree = make_tree(base / f"tree-{label}", seed)
            backups[label] = (back_up(repository, tree), tree)
            added[label] = keys_of(base / "repo") - before
    return base / "repo", backups, added


def blob_of(added: set[str], kind: str) -> str:
    """The one blob of a kind that a backup added (each small backup adds one of each)."""
    prefix = {"data": "data/", "tree": "tree/", "index": "index/", "manifest": "backups/"}[kind]
    [key] = [k for k in added if k.startswith(prefix)]
    return key


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def swap(first: Path, second: Path) -> None:
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)


KINDS = ["data", "tree", "index", "manifest"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "swap"])
@pytest.mark.parametrize("kind", KINDS)
def test_tampered_blob_is_named_and_other_backups_restore(three_backups, tmp_path, kind, damage):
    source, backups, added = three_backups
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    repository = open_repository(FilesystemStorage(str(repo)), PASSPHRASE)
    target = blob_of(added["A"], kind)
    affected = {"A"}
    if damage == "flip":
        flip(repo / target)
    elif damage == "truncate":
        truncate(repo / target)
    elif damage == "delete":
        (repo / target).unlink()
    else:
        swap(repo / target, repo / blob_of(added["B"], kind))
        affected = {"A", "B"}

    report = verify(repository, ALL)

    if kind == "manifest" and damage == "delete":
        # A deleted manifest is a deleted backup (what `backup delete` does): nothing is
        # damaged, A is simply gone, and its data is garbage for maintenance.
        assert report.clean and report.backups == 2
        affected = set()
    else:
        assert not report.clean
        ids = {backups[label][0]: label for label in backups}
        assert {ids[b] for b in report.damaged_backups} == affected, report.as_dict()
        named = {p["blob"] for p in report.problems}
        if damage != "delete":
            assert target in named, report.problems
        if kind in ("data", "tree") and damage == "delete":
            assert target in named  # the index lists it: its absence is a problem
        if kind == "data":  # the files of A, by name: every one when its whole pack is gone
            lost = " ".join(report.damaged_backups[backups["A"][0]])
            gone = range(4) if damage in ("delete", "swap") else ()
            assert "file-" in lost and all(f"file-{i}.bin" in lost for i in gone)

    for label, (backup_id, tree) in backups.items():
        destination = tmp_path / f"restore-{label}"
        if label not in affected:
            if not (label == "A" and kind == "manifest"):
                assert not restore_into(repository, backup_id, destination).errors
                assert snapshot(destination / tree.name) == snapshot(tree)
            continue
        # An affected backup: whatever is restored is exactly the source's bytes.
        try:
            restore_into(repository, backup_id, destination)
        except CorsoError:
            pass  # its manifest or trees cannot be read: nothing to restore
        for restored in destination.rglob("*.bin") if destination.exists() else ():
            original = tree / restored.relative_to(destination / tree.name)
            assert restored.read_bytes() == original.read_bytes()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "swap"])
@pytest.mark.parametrize("key", ["format", "format-copy"])
def test_tampered_format_blob_is_named(three_backups, tmp_path, key, damage):
    source, backups, _ = three_backups
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    repository = open_repository(FilesystemStorage(str(repo)), PASSPHRASE)
    if damage == "swap":  # the two format blobs are one kind and hold the same bytes
        swap(repo / "format", repo / "format-copy")
        assert verify(repository).clean
        return
    {"flip": flip, "truncate": truncate, "delete": Path.unlink}[damage](repo / key)
    report = verify(repository)
    assert [p["blob"] for p in report.problems] == [key]
    assert report.damaged_backups == {}  # the other format blob still opens the repository


def test_structure_check_catches_truncation_without_reading_data(three_backups, tmp_path):
    source, _, added = three_backups
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    repository = open_repository(FilesystemStorage(str(repo)), PASSPHRASE)
    flipped, truncated = blob_of(added["A"], "data"), blob_of(added["B"], "data")
    flip(repo / flipped)
    truncate(repo / truncated)
    report = verify(repository)
    assert report.packs_read == 0 and report.bytes_read == 0
    assert [p["blob"] for p in report.problems] == [truncated]  # a flip needs --read-data
    assert [p["blob"] for p in verify(repository, ALL).problems].count(flipped) >= 1


def test_subsets_select_slices_that_cover_every_pack_once():
    packs = [os.urandom(16).hex() for _ in range(200)]
    slices = [parse_subset(f"{n}/5").select(packs) for n in range(1, 6)]
    assert sum(map(len, slices)) == len(packs) and set().union(*slices) == set(packs)
    assert all(20 <= len(s) <= 60 for s in slices)
    assert len(parse_subset("10%").select(packs)) == 20
    assert len(parse_subset("0.1%").select(packs)) == 1  # never zero packs for a positive N
    for bad in ("0%", "101%", "0/3", "4/3", "x", "5", "1/0"):
        with pytest.raises(UsageError, match="read-data-subset"):
            parse_subset(bad)


def test_cli_verify_clean_damaged_json_and_bad_subset(connected, corso, tmp_path):  # noqa: F811
    tree = make_tree(tmp_path / "tree", 7)
    backup_id = create(corso, "--path", str(tree))
    clean = corso("repo", "verify", "--read-data")
    assert clean.code == 0 and "No problems found." in clean.out and clean.err == ""
    data = json.loads(corso("repo", "verify", "--read-data-subset", "1/1", "--json").out)
    assert data["clean"] and data["packs_read"] == data["packs"] >= 2

    one_error_line(corso("repo", "verify", "--read-data-subset", "7"), 2, "read-data-subset")
    one_error_line(corso("repo", "verify", "--read-data", "--read-data-subset", "1/2"), 2,
                   "not both")
    [pack] = [p for p in (connected / "data").rglob("*") if p.is_file()]
    flip(pack)
    damaged = corso("repo", "verify", "--read-data", "--json")
    one_error_line(damaged, 1, "verify found", "affecting 1 backup;",
                   "damaged data cannot be restored from this repository",
                   "corso repo repair --read-data lets the next backup store it again")
    assert "rebuild the index" not in damaged.err  # no index to rebuild
    report = json.loads(damaged.out)
    assert list(report["damaged_backups"]) == [backup_id]
    assert any(pack.name in p["blob"] for p in report["problems"])
    text = corso("repo", "verify", "--read-data")
    assert f"backup {backup_id} cannot be fully restored" in text.out and "file-" in text.out

    pack.unlink()  # a lost pack needs no reading of the others: plain repair takes it out
    lost = corso("repo", "verify")
    one_error_line(lost, 1, "verify found",
                   "; corso repo repair lets the next backup store it again")


def test_cli_verify_advice_is_what_clears_the_damage(connected, corso, tmp_path):  # noqa: F811
    """It said "run corso repo repair" for damage repair leaves as it is: a damaged upkeep
    record (maintenance writes it again) and a backup damaged by a tree chunk, which no blob
    check names (exploratory test)."""
    tree = make_tree(tmp_path / "tree", 8)
    backup_id = create(corso, "--path", str(tree))
    assert corso("repo", "maintenance", "--safety", "none").code == 0
    flip(connected / "upkeep" / "maintained")
    record = corso("repo", "verify")
    one_error_line(record, 1, "run corso repo maintenance, which writes the upkeep records")
    assert corso("repo", "maintenance", "--safety", "none").code == 0
    assert corso("repo", "verify").code == 0

    [tree_pack] = [p for p in (connected / "tree").rglob("*") if p.is_file()]
    data = bytearray(tree_pack.read_bytes())
    data[40] ^= 1  # inside the first chunk: the root tree
    tree_pack.write_bytes(bytes(data))
    shutil.rmtree(os.environ["CORSO_CACHE_DIR"])  # its cached copy is sound
    damaged = corso("repo", "verify")
    one_error_line(damaged, 1, "0 damaged blobs affecting 1 backup;",
                   "run corso repo repair --read-data, which takes damaged chunks out of the "
                   "index, then back up again", f"corso backup delete files --backups {backup_id}")


class ReadOnlyStorage(FilesystemStorage):
    """What read-only credentials give: reads work, every write is refused."""

    def put(self, key, data):
        raise PermissionDenied(f"writing {key}: permission denied")


def test_verify_with_read_only_access_still_reports(three_backups):
    source, _, _ = three_backups
    repository = open_repository(ReadOnlyStorage(str(source)), PASSPHRASE)
    report = verify(repository, ALL)
    assert report.clean and report.backups == 3
