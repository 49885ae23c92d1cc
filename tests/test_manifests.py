import logging

import pytest
from datalayer import make_repository

from corso_core.errors import Corrupted, NotFound
from corso_core.repo import names
from corso_core.repo.manifests import (
    delete_manifests,
    list_manifests,
    load_manifest,
    save_manifest,
)


def test_save_load_list_delete(tmp_path):
    repo = make_repository(tmp_path)
    first = save_manifest(repo, {"time": "2026-01-01T00:00:00Z", "paths": ["/a"], "tags": {}})
    second = save_manifest(repo, {"time": "2026-01-02T00:00:00Z", "paths": ["/b"]})
    assert names.parse_key(names.MANIFEST, names.key(names.MANIFEST, first)) == first
    assert load_manifest(repo, first) == {"id": first, "time": "2026-01-01T00:00:00Z",
                                          "paths": ["/a"], "tags": {}}
    assert [m["id"] for m in list_manifests(repo)] == [first, second]
    delete_manifests(repo, [first])
    assert [m["id"] for m in list_manifests(repo)] == [second]
    with pytest.raises(NotFound, match=f"no backup {first}"):
        load_manifest(repo, first)


def test_manifests_are_encrypted(tmp_path):
    repo = make_repository(tmp_path)
    backup_id = save_manifest(repo, {"paths": ["/very/secret/place"]})
    assert b"secret" not in repo.storage.get(names.key(names.MANIFEST, backup_id))


@pytest.mark.parametrize("backup_id", ["0123456789abcdef", "../../format", "", "ABC"])
def test_an_unknown_backup_id_is_not_found_naming_it(tmp_path, backup_id):
    repo = make_repository(tmp_path)
    with pytest.raises(NotFound, match=f"no backup '?{backup_id}"):
        load_manifest(repo, backup_id)


def test_deleting_with_one_unknown_id_deletes_nothing(tmp_path):
    repo = make_repository(tmp_path)
    kept = save_manifest(repo, {})
    with pytest.raises(NotFound, match="no backup 0000000000000000 .*nothing deleted"):
        delete_manifests(repo, [kept, "0000000000000000"])
    assert load_manifest(repo, kept)["id"] == kept


def test_a_swapped_or_damaged_manifest_is_corrupted_and_left_out_of_lists(tmp_path, caplog):
    repo = make_repository(tmp_path)
    good, victim = save_manifest(repo, {"n": 1}), save_manifest(repo, {"n": 2})
    key = names.key(names.MANIFEST, victim)
    repo.storage.put(key, repo.storage.get(names.key(names.MANIFEST, good)))  # replayed
    with pytest.raises(Corrupted, match=f"manifest of backup {victim} is corrupted"):
        load_manifest(repo, victim)
    with caplog.at_level(logging.WARNING):
        assert [m["id"] for m in list_manifests(repo, cache_dir=str(tmp_path / "c2"))] == [good]
    assert victim in caplog.text
    caplog.clear()
    damaged = {}  # a caller that reports them itself (backup list): told, nothing logged
    assert [m["id"] for m in list_manifests(repo, cache_dir=str(tmp_path / "c3"),
                                            on_damaged=damaged.__setitem__)] == [good]
    assert list(damaged) == [victim] and "authentication failed" in damaged[victim]
    assert victim not in caplog.text


def test_a_second_list_reads_manifests_from_the_cache(tmp_path):
    repo = make_repository(tmp_path)
    ids = [save_manifest(repo, {"n": n}) for n in range(5)]
    assert sorted(m["id"] for m in list_manifests(repo)) == sorted(ids)
    before = repo.storage.counts.requests.get("GET", 0)
    assert sorted(m["id"] for m in list_manifests(repo)) == sorted(ids)
    assert repo.storage.counts.requests.get("GET", 0) == before
    repo.storage.delete(names.key(names.MANIFEST, ids[0]))  # another client deletes it
    with pytest.raises(NotFound):
        load_manifest(repo, ids[0])
    assert ids[0] not in [m["id"] for m in list_manifests(repo)]
