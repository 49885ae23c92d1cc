"""S3 faults at 10 % (500, 503, resets, timeouts) during backups and maintenance: each
completes or fails with corso's own error, and afterwards verify --read-data is clean and
every backup restores byte-identical."""

from __future__ import annotations

from s3_servers import with_small_parts
from test_s3_faults import FAULT_RATE, FaultInjector
from test_upkeep_maintenance import OWNER, edit
from test_upkeep_verify import PASSPHRASE, back_up, make_tree, restore_into
from trees import snapshot

from corso_core.errors import CorsoError
from corso_core.repo.manifests import delete_manifests
from corso_core.repo.repository import init_repository, open_repository
from corso_core.upkeep.maintenance import run_maintenance
from corso_core.upkeep.verify import ALL, verify
from corso_s3.factory import open_storage


def test_backups_and_maintenance_under_s3_faults(seaweedfs, s3_prefix, small_chunks, tmp_path):
    init_repository(open_storage(seaweedfs.values(s3_prefix)), PASSPHRASE)
    storage = with_small_parts(open_storage(seaweedfs.values(s3_prefix)))
    injector = FaultInjector(FAULT_RATE, seed=7)
    injector.attach(storage.client)
    faulty = open_repository(storage, PASSPHRASE)

    tree = make_tree(tmp_path / "tree", 8, files=5)
    expected, outcomes = {}, []
    for day in range(5):
        if day:
            edit(tree, 300 + day)
        try:
            backup_id = back_up(faulty, tree)
            expected[backup_id] = snapshot(tree)
            outcomes.append("backup")
        except CorsoError:
            outcomes.append("backup failed cleanly")
        if len(expected) > 2:
            oldest = sorted(expected)[0]
            delete_manifests(faulty, [oldest])
            del expected[oldest]
        try:
            run_maintenance(faulty, safety="none", **OWNER)
            outcomes.append("maintenance")
        except CorsoError:
            outcomes.append("maintenance failed cleanly")
    assert injector.injected >= 10, injector.injected
    assert outcomes.count("maintenance") >= 1 and outcomes.count("backup") >= 1, outcomes

    clean = open_repository(open_storage(seaweedfs.values(s3_prefix)), PASSPHRASE)
    report = verify(clean, ALL)
    assert report.clean, report.as_dict()
    assert report.backups == len(expected)
    for n, (backup_id, taken) in enumerate(expected.items()):
        restore_into(clean, backup_id, tmp_path / f"out-{n}")
        assert snapshot(tmp_path / f"out-{n}" / "tree") == taken
