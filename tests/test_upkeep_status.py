"""`corso repo status` shows backups, blobs by kind, and the last maintenance and verify with
the requests by kind each made."""

from __future__ import annotations

import json

from test_backup_cli import connected, create  # noqa: F401 (connected is a fixture)
from test_upkeep_verify import make_tree


def test_status_shows_backups_blobs_by_kind_last_maintenance_and_verify(connected, corso,  # noqa: F811
                                                                        tmp_path):
    before = json.loads(corso("repo", "status", "--json").out)
    assert before["backups"] == 0
    assert before["last_maintenance"] is None and before["last_verify"] is None
    assert "last verify:      never" in corso("repo", "status").out

    create(corso, "--path", str(make_tree(tmp_path / "tree", 3)))
    assert corso("repo", "verify", "--read-data").code == 0
    assert corso("repo", "maintenance", "--mode", "metadata", "--user", "u", "--host",
                 "h").code == 0
    status = json.loads(corso("repo", "status", "--json").out)
    assert status["backups"] == 1
    kinds = status["blobs_by_kind"]
    assert (kinds["data"]["objects"], kinds["tree"]["objects"], kinds["index"]["objects"]) == (
        1, 1, 1)
    assert kinds["data"]["bytes"] > 3 * 16 * 1024
    assert status["last_maintenance"]["mode"] == "metadata"
    assert status["last_maintenance"]["user"] == "u"
    assert status["last_verify"]["clean"] and status["last_verify"]["packs_read"] == 2
    # Requests by kind of each run: verify read the two packs, the index blob, the manifest
    # and both format blobs, and wrote nothing but its record (counted after it was taken).
    verified = status["last_verify"]["requests"]
    assert verified["GET"] >= 2 + 1 + 1 + 2 and verified["LIST"] >= 1, verified
    assert "PUT" not in verified and "DELETE" not in verified, verified
    maintained = status["last_maintenance"]["requests"]  # the owner record, the merge
    assert maintained["PUT"] >= 1 and maintained["LIST"] >= 1, maintained
    text = corso("repo", "status").out
    assert "backups:        1" in text and "clean, 2 of 2 packs read; requests: " in text
    assert f"{verified['GET']} GET" in text
    assert "last maintenance: " in text and "metadata, by u@h; requests: " in text
