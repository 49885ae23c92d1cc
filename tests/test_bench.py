"""The benchmark harness (bench/) on a tiny dataset: it must keep working between real runs.

It needs neither restic nor borg: test adapters that copy files with `cp` exercise the runner,
two of them spoiling their restore (a flipped bit, a changed mode). Where restic, borg or
corso's backup commands are installed, their rows run too (and restic on S3, counted at the
server).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import zstandard

from bench import dataset, report
from bench.measure import StepFailed, run_measured
from bench.run import (
    WORK_MARKER,
    Settings,
    fresh_work_directory,
    main,
    run_benchmark,
    step_summary,
)
from bench.seaweedfs import parse_request_counts
from bench.targets import S3Target
from bench.tools import Borg, Command, Corso, Restic, Tool
from bench.verify import differences

TINY = 0.003  # about 3 MiB


def _tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_dataset_is_deterministic_and_mutation_changes_a_few_percent(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    summary = dataset.generate(first, TINY)
    dataset.generate(second, TINY)
    dataset.generate(other, TINY, seed=dataset.SEED + 1)
    assert _tree_bytes(first) == _tree_bytes(second)
    assert _tree_bytes(first) != _tree_bytes(other)
    assert summary.files > 10 and 2_000_000 < summary.bytes < 5_000_000
    large = sorted(p.name for p in (first / dataset.LARGE_DIR).iterdir())
    assert large == ["duplicates.bin", "logs.txt", "random.bin"]
    compressed = {name: len(zstandard.compress((first / "large" / name).read_bytes(), 3))
                  / (first / "large" / name).stat().st_size for name in large}
    assert compressed["random.bin"] > 0.99  # incompressible
    assert compressed["logs.txt"] < 0.25  # highly compressible
    assert compressed["duplicates.bin"] < 0.85  # random, but repeating itself

    before = _tree_bytes(first)
    changed = dataset.mutate(first)
    after = _tree_bytes(first)
    assert 0.005 < changed / summary.bytes < 0.06
    assert before.keys() - after.keys(), "the mutation deletes files"
    assert after.keys() - before.keys(), "the mutation adds files"
    for name in large:  # an insert in the middle keeps both ends
        old, new = before[f"large/{name}"], after[f"large/{name}"]
        assert len(new) > len(old) and new[:1000] == old[:1000] and new[-1000:] == old[-1000:]


def test_a_full_disk_ends_the_run_in_one_line_and_removes_the_work_directory(tmp_path,
                                                                              monkeypatch):
    """A run that fills the disk stopped with a traceback and left its gigabytes in --work,
    to fill the disk again for the next run."""
    def filling(root: Path, size: float, seed: int = dataset.SEED):
        root.mkdir(parents=True)
        (root / "part").write_bytes(b"x" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "part"))

    monkeypatch.setattr(dataset, "generate", filling)
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as stopped:
        main(["--work", str(work), "--out", str(tmp_path / "out"), "--targets", "local"])
    assert stopped.value.code == (f"bench: error: No space left on device "
                                  f"({work / 'data' / 'tree' / 'part'}): free some space, or "
                                  "give --work on a larger filesystem")
    assert not work.exists()


def test_verification_catches_a_corrupted_missing_or_extra_file(tmp_path):
    source = tmp_path / "source"
    dataset.generate(source, TINY)
    restored = tmp_path / "restored"
    shutil.copytree(source, restored, symlinks=True)
    assert differences(source, restored) == []

    victim = next(p for p in sorted(restored.rglob("*.bin")))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    mtime_ns = victim.stat().st_mtime_ns
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(mtime_ns, mtime_ns))  # only the content differs
    assert differences(source, restored) == [f"content differs: {victim.relative_to(restored)}"]

    (restored / "extra.txt").write_text("x")
    next(p for p in sorted(restored.rglob("*.txt")) if p.name != "extra.txt").unlink()
    problems = differences(source, restored)
    assert any(p.startswith("missing: ") for p in problems)
    assert "unexpected: extra.txt" in problems
    assert differences(source, tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'} does not exist"]


def test_verification_catches_a_wrong_mode_or_mtime(tmp_path):
    source = tmp_path / "source"
    dataset.generate(source, TINY)
    (source / "link").symlink_to(dataset.LARGE_DIR)
    restored = tmp_path / "restored"
    shutil.copytree(source, restored, symlinks=True)
    assert differences(source, restored) == []
    victim = next(p for p in sorted(restored.rglob("*.bin")))
    name = str(victim.relative_to(restored))
    mode = victim.stat().st_mode & 0o777
    victim.chmod(mode ^ 0o100)
    assert differences(source, restored) == [f"mode differs: {name} ({mode:o} != "
                                             f"{mode ^ 0o100:o})"]
    victim.chmod(mode)
    directory = victim.parent
    mtime_ns = directory.stat().st_mtime_ns
    os.utime(directory, ns=(mtime_ns, mtime_ns + 1))  # one nanosecond off
    assert differences(source, restored) == [
        f"mtime differs: {directory.relative_to(restored)} ({mtime_ns} != {mtime_ns + 1})"]
    os.utime(directory, ns=(mtime_ns, mtime_ns))
    os.utime(restored / "link", ns=(0, 0), follow_symlinks=False)  # a symlink's own mtime
    assert [p.split(" (")[0] for p in differences(source, restored)] == ["mtime differs: link"]


def test_measurement_covers_the_whole_process_tree():
    # Two children hold 80 MiB each at the same time, and one burns CPU: the tree's figures.
    child = "import time; b = bytearray(80 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1)"
    spin = "import time; t = time.process_time(); exec('while time.process_time() - t < 0.3: pass')"
    parent = (
        "import subprocess, sys; "
        f"ps = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(2)]; "
        f"subprocess.run([sys.executable, '-c', {spin!r}]); [p.wait() for p in ps]"
    )
    measured = run_measured([sys.executable, "-c", parent], env=dict(os.environ))
    assert measured.peak_rss_bytes > 160 << 20
    assert measured.cpu_s >= 0.3
    assert measured.wall_s >= 1

    # It says whether the page cache was dropped: it was wherever the machine allows it.
    cold = run_measured(["true"], env=dict(os.environ), cold_cache=True)
    assert cold.cold_cache == os.access("/proc/sys/vm/drop_caches", os.W_OK)
    assert run_measured(["true"], env=dict(os.environ)).cold_cache is False

    with pytest.raises(StepFailed, match="exited 3: the reason"):
        run_measured(["sh", "-c", "echo the reason >&2; exit 3"], env=dict(os.environ))
    with pytest.raises(StepFailed, match="timed out"):
        run_measured(["sleep", "10"], env=dict(os.environ), timeout_s=0.3)


def test_request_counts_are_read_per_bucket_and_kind():
    text = (
        "# TYPE SeaweedFS_s3_request_total counter\n"
        'SeaweedFS_s3_request_total{bucket="a",code="200",type="PUT"} 7\n'
        'SeaweedFS_s3_request_total{bucket="a",code="404",type="GET"} 2\n'
        'SeaweedFS_s3_request_total{bucket="a",code="200",type="GET"} 3\n'
        'SeaweedFS_s3_request_total{bucket="b",code="200",type="LIST"} 1\n'
        'SeaweedFS_s3_request_time_seconds_count{bucket="a",type="PUT"} 7\n'
    )
    counts = parse_request_counts(text)
    assert counts["a"] == {"PUT": 7, "GET": 5}
    assert counts["b"] == {"LIST": 1}


def test_requests_are_counted_at_the_server(seaweedfs_process):
    bucket = "bench-counting"
    seaweedfs_process.create_bucket(bucket)
    client = seaweedfs_process.s3_client()
    before = seaweedfs_process.request_counts(bucket)
    for i in range(3):
        client.put_object(Bucket=bucket, Key=f"k{i}", Body=b"12345")
    client.get_object(Bucket=bucket, Key="k0")
    client.list_objects_v2(Bucket=bucket)
    counted = seaweedfs_process.request_counts(bucket) - before
    assert counted == {"PUT": 3, "GET": 1, "LIST": 1}
    assert seaweedfs_process.bucket_bytes(bucket) == 15


def test_an_s3_target_repository_is_in_a_bucket_warmed_and_left_empty(seaweedfs_process,
                                                                      tmp_path):
    repo = S3Target(seaweedfs_process).repository("warm", tmp_path)
    assert repo.bucket == "bench-warm"
    # Made (a PUT), written into (a PUT: SeaweedFS makes its first volume) and emptied.
    assert seaweedfs_process.request_counts(repo.bucket) == {"PUT": 2, "DELETE": 1}
    listed = seaweedfs_process.s3_client().list_objects_v2(Bucket=repo.bucket)
    assert listed.get("KeyCount", 0) == 0


def test_the_servers_cpu_time_grows_with_what_it_stores(seaweedfs_process):
    bucket = "bench-cpu"
    seaweedfs_process.create_bucket(bucket)
    client = seaweedfs_process.s3_client()
    before = seaweedfs_process.cpu_seconds()
    for i in range(4):  # ~10 ms of server CPU per MiB stored: far above one clock tick
        client.put_object(Bucket=bucket, Key=f"k{i}", Body=os.urandom(8 << 20))
    assert seaweedfs_process.cpu_seconds() - before > 0.05


class CopyTool(Tool):
    """A 'backup tool' that copies the tree: no peer needed to drive the runner end to end."""

    name = "copy"
    program = "cp"

    def unavailable_reason(self) -> str | None:
        return None

    def version(self) -> str:
        return "test"

    def init(self, repo, home) -> Command:
        return Command(["mkdir", "-p", str(repo.path)])

    def backup(self, repo, home, source, label) -> Command:
        return Command(["cp", "-a", str(source), str(repo.path / label)])

    def restore(self, repo, home, backup_id, destination) -> Command:
        return Command(["cp", "-a", str(repo.path / backup_id), str(destination)])

    def restored_root(self, destination, source) -> Path:
        return destination


class SabotagingCopyTool(CopyTool):
    """Restores with `cp -a`, then runs `sabotage` (Python; `p` is the first restored .bin
    file) on the copy: verification must fail the row."""

    def __init__(self, name: str, sabotage: str):
        self.name = name
        self.sabotage = sabotage

    def restore(self, repo, home, backup_id, destination) -> Command:
        script = ("import pathlib, sys; p = sorted(pathlib.Path(sys.argv[1]).rglob('*.bin'))[0]; "
                  + self.sabotage)
        copy = f"cp -a {repo.path / backup_id} {destination}"
        return Command(["sh", "-c", f"{copy} && {sys.executable} -c \"{script}\" {destination}"])


FLIP_A_BIT = "b = bytearray(p.read_bytes()); b[0] ^= 1; p.write_bytes(bytes(b))"
DROP_WRITE_PERMISSION = "p.chmod(p.stat().st_mode & ~0o200)"


def _peers() -> list[Tool]:
    """restic, borg and corso where they can run here."""
    peers = [Corso(), Restic(), Borg("lz4")]
    return [tool for tool in peers if tool.unavailable_reason() is None]


def test_harness_end_to_end_on_a_tiny_dataset(tmp_path):
    peers = _peers()
    on_s3 = [t for t in peers if "s3" in t.targets]
    settings = Settings(
        size=TINY, work=tmp_path / "work", out=tmp_path / "out", drop_caches=False,
        targets=("local", "s3") if on_s3 else ("local",),
        micro_megabytes=1, index_entries=2_000, settle_s=0, repeat=2,
    )
    sabotaging = [SabotagingCopyTool("corrupting-copy", FLIP_A_BIT),
                  SabotagingCopyTool("chmod-copy", DROP_WRITE_PERMISSION)]
    results = run_benchmark(settings, [CopyTool(), *sabotaging, *peers])

    rows = {(r["tool"], r["target"]): r for r in results["rows"]}
    copy = rows["copy", "local"]
    assert copy["status"] == "ok"
    assert set(copy["steps"]) == {"first", "unchanged", "mutated", "restore"}
    runs = {step: [run["wall_s"] for run in figures["runs"]]
            for step, figures in copy["steps"].items()}
    steps = ("first", "unchanged", "mutated", "restore")
    assert [len(runs[step]) for step in steps] == [2, 1, 1, 2]
    assert copy["steps"]["first"]["wall_s"] == pytest.approx(sum(runs["first"]) / 2, abs=0.001)
    assert all(s["wall_s"] > 0 and s["peak_rss_bytes"] > 0 for s in copy["steps"].values())
    # Three full copies of the tree, the last one after the mutation grew it.
    assert copy["repo_bytes"]["final"] > 3 * results["dataset"]["bytes"]
    assert rows["corrupting-copy", "local"]["status"].startswith(
        "failed: restore differs from the source: content differs: ")
    assert rows["chmod-copy", "local"]["status"].startswith(
        "failed: restore differs from the source: mode differs: ")
    for tool in peers:
        for target in tool.targets:
            if target in settings.targets:
                assert rows[tool.name, target]["status"] == "ok", (tool.name, target)
    for tool in on_s3:
        requests = rows[tool.name, "s3"]["requests"]
        assert requests["first"].get("PUT", 0) > 0 and requests["restore"].get("GET", 0) > 0
        first = rows[tool.name, "s3"]["steps"]["first"]
        assert first["server_cpu_s"] > 0
        cores = results["machine"]["cores"]
        floor = (first["cpu_s"] + first["server_cpu_s"]) / cores
        assert first["wall_floor_s"] == pytest.approx(floor, abs=0.002)  # each one rounded
    assert "server_cpu_s" not in copy["steps"]["first"]  # a local target has no server
    assert results["cold_cache"] is False
    # Every building block was measured (a renamed corso function once left a row "not available").
    assert "corso chain (chunk, ID, compress, seal)" in results["micro"]
    for stage, figures in results["micro"].items():
        assert isinstance(figures, dict) and min(figures.values()) > 0, (stage, figures)
    assert results["index"]["bytes_per_entry"] > 0

    assert json.loads((settings.out / "results.json").read_text()) == results
    assert (settings.out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (settings.out / "results.md").read_text()
    reference = "restic" if any(isinstance(t, Restic) for t in peers) else "copy"
    assert f"×{reference}" in markdown.split("## local filesystem")[1]
    assert "- corrupting-copy: failed: restore differs" in markdown
    assert "Page cache: NOT dropped" in markdown
    assert "ran 2 times per tool" in markdown
    assert "| copy | " + ", ".join(report._format(w) for w in runs["first"]) in markdown
    assert "**" in markdown  # the best figure of each row is bold
    assert not settings.work.exists(), "the run cleans up its work directory"



def _row(tool: str, wall_s: float, repo_bytes: int, status: str = "ok") -> dict:
    step = {"wall_s": wall_s, "cpu_s": wall_s, "peak_rss_bytes": 64 << 20, "cold_cache": True}
    steps = dict.fromkeys(("first", "unchanged", "mutated", "restore"), step)
    return {"tool": tool, "target": "local", "status": status, "steps": steps, "requests": {},
            "repo_bytes": {"after_first": repo_bytes, "final": repo_bytes}}


def test_report_divides_by_restic_and_bolds_the_best():
    rows = [_row("corso", 1.0, 30 << 20), _row("restic", 2.0, 20 << 20),
            _row("borg-lz4", 0.5, 10 << 20, status="failed: restore: boom")]
    table = "\n".join(report.target_table(rows, "local"))
    assert table.splitlines()[0] == "| figure | restic | corso | ×restic |"
    assert "| first backup: wall s | 2.00 | **1.00** | 0.50 |" in table
    assert "| repository MiB at the end | **20.0** | 30.0 | 1.50 |" in table
    assert "borg" not in table  # a failed row is listed under the table, never compared


def test_the_s3_table_shows_the_servers_cpu_and_the_wall_floor():
    rows = [_row("corso", 1.0, 30 << 20), _row("restic", 2.0, 20 << 20)]
    for row, server_cpu in zip(rows, (3.0, 3.5), strict=True):
        row["target"] = "s3"
        row["steps"] = {step: figures | {"server_cpu_s": server_cpu, "wall_floor_s": 2.0}
                        for step, figures in row["steps"].items()}
    table = "\n".join(report.target_table(rows, "s3"))
    assert "| first backup: server CPU s | 3.50 | **3.00** | 0.86 |" in table
    assert "| full restore: wall floor s | **2.00** | **2.00** | 1.00 |" in table
    assert "server CPU" not in "\n".join(report.target_table(rows, "local"))


def test_a_repeated_step_takes_the_median_time_and_the_largest_peak_memory():
    runs = [{"wall_s": wall, "cpu_s": wall * 2, "peak_rss_bytes": rss, "cold_cache": True}
            for wall, rss in ((1.0, 30), (5.0, 10), (2.0, 20))]
    summary = step_summary(runs)
    assert (summary["wall_s"], summary["cpu_s"], summary["peak_rss_bytes"]) == (2.0, 4.0, 30)
    assert summary["cold_cache"] is True and summary["runs"] == runs
    assert "server_cpu_s" not in summary  # a local step has no server


def test_a_repeat_count_below_one_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--repeat", "0", "--work", str(tmp_path / "work")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --repeat: '0' is not a whole number of runs, 1 or more")
    assert not (tmp_path / "work").exists()


def test_a_work_directory_that_the_bench_did_not_make_is_never_wiped(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious").write_text("keep me")
    with pytest.raises(SystemExit, match="not a benchmark's work directory"):
        fresh_work_directory(mine)
    assert (mine / "precious").read_text() == "keep me"
    earlier_run = tmp_path / "work"
    fresh_work_directory(earlier_run)  # made, and marked, by a run
    (earlier_run / "leftover").write_text("x")
    fresh_work_directory(earlier_run)
    assert sorted(p.name for p in earlier_run.iterdir()) == [WORK_MARKER]
