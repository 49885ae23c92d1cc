"""Whole commands killed with SIGKILL at chosen writes (CORSO_TEST_KILL_AFTER_WRITES): the
process dies there, no finally block runs. After each kill of maintenance, backup or repair,
verify --read-data is clean (or repair makes it clean), no completed backup is lost, and the
next maintenance finishes the job. A few points in make test; every point in make soak."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
from cli_fixtures import run_subprocess
from test_backup_cli import connected, create  # noqa: F401 (connected is a fixture)
from test_upkeep_maintenance import edit
from test_upkeep_verify import make_tree
from trees import snapshot

from corso_core.storage.kill_switch import KILL_AFTER_WRITES_ENV


@pytest.fixture
def scene(connected, corso, tmp_path):  # noqa: F811
    """Three backups of a changing tree, the oldest deleted; a pristine copy to reset to."""
    tree = make_tree(tmp_path / "tree", 21, files=5)
    ids = []
    for day in range(3):
        if day:
            edit(tree, 400 + day)
        ids.append(create(corso, "--path", str(tree)))
    assert corso("backup", "delete", "files", "--backups", ids[0]).code == 0
    pristine = tmp_path / "pristine"
    shutil.copytree(connected, pristine)

    def reset() -> None:
        shutil.rmtree(connected)
        shutil.copytree(pristine, connected)

    return reset, ids[1:], tree, snapshot(tree)


def killed(*args: str, writes: int) -> bool:
    """Run corso in a process that dies at write `writes`; whether it died (else it finished)."""
    result = run_subprocess(*args, env={KILL_AFTER_WRITES_ENV: str(writes)})
    assert result.code in (0, -signal.SIGKILL), result
    return result.code == -signal.SIGKILL


def check(corso, kept, tree, taken, tmp_path, n: int) -> None:
    assert corso("repo", "verify", "--read-data").code == 0, n
    assert corso("repo", "maintenance", "--safety", "none").code == 0
    listed = {row["id"] for row in json.loads(corso("backup", "list", "files", "--json").out)}
    assert set(kept) <= listed, n
    assert corso("repo", "verify", "--read-data").code == 0, n
    destination = tmp_path / f"out-{n}"
    assert corso("restore", "files", "--backup", kept[-1], "--destination",
                 str(destination)).code == 0
    assert snapshot(destination / tree.name) == taken


def kill_points(scene, corso, tmp_path, command, points, repair_first=False) -> int:
    reset, kept, tree, taken = scene
    deaths = 0
    for n in points:
        reset()
        if not killed(*command, writes=n):
            break
        deaths += 1
        if repair_first:
            assert corso("repo", "repair").code == 0
        check(corso, kept, tree, taken, tmp_path, n)
    return deaths


MAINTENANCE = ("repo", "maintenance", "--safety", "none", "--max-unused", "0%")


def test_sigkill_at_chosen_writes(scene, corso, connected, tmp_path):  # noqa: F811
    assert kill_points(scene, corso, tmp_path, MAINTENANCE, [0, 3, 7, 12, 18]) == 5
    new_tree = make_tree(tmp_path / "new", 22)
    assert kill_points(scene, corso, tmp_path, ("backup", "create", "files", "--path",
                                                str(new_tree)), [1, 3]) == 2

    def lose_an_index_blob_then_repair(n: int) -> bool:
        next(iter((connected / "index").iterdir())).unlink()
        return killed("repo", "repair", writes=n)

    reset, kept, tree, taken = scene
    reset()
    assert lose_an_index_blob_then_repair(0)
    assert corso("repo", "repair").code == 0
    check(corso, kept, tree, taken, tmp_path, 100)


@pytest.mark.soak
def test_sigkill_at_every_write_of_maintenance(scene, corso, tmp_path):
    assert kill_points(scene, corso, tmp_path, MAINTENANCE, range(200)) >= 15
