"""bench/results.{json,md,png} from a run's results.

The markdown has one table per target: a row per measured figure, a column per tool, and next to
each tool a ratio against the reference (restic when its row succeeded, else the first tool that
did; the report names it). Lower is better for every figure; the best is in bold.
"""

from __future__ import annotations

import json
from pathlib import Path

MiB = 1024 * 1024
STEP_TITLES = {"first": "first backup", "unchanged": "unchanged re-backup",
               "mutated": "backup after mutation", "restore": "full restore"}
PREFERRED_REFERENCE = "restic"


def _figures(target: str) -> list[tuple[str, callable]]:
    """(label, row -> value or None) for every figure in a target's table."""
    figures = []
    for step, title in STEP_TITLES.items():
        figures += [
            (f"{title}: wall s", lambda r, s=step: r["steps"].get(s, {}).get("wall_s")),
            (f"{title}: CPU s", lambda r, s=step: r["steps"].get(s, {}).get("cpu_s")),
            (f"{title}: peak RSS MiB",
             lambda r, s=step: _scaled(r["steps"].get(s, {}).get("peak_rss_bytes"), MiB)),
        ]
    figures += [
        ("repository MiB after first backup",
         lambda r: _scaled(r["repo_bytes"].get("after_first"), MiB)),
        ("repository MiB at the end", lambda r: _scaled(r["repo_bytes"].get("final"), MiB)),
    ]
    if target == "s3":
        for step, title in STEP_TITLES.items():
            figures += [
                (f"{title}: server CPU s",
                 lambda r, s=step: r["steps"].get(s, {}).get("server_cpu_s")),
                (f"{title}: wall floor s",
                 lambda r, s=step: r["steps"].get(s, {}).get("wall_floor_s")),
            ]
        for step, title in STEP_TITLES.items():
            figures.append((f"{title}: S3 requests",
                            lambda r, s=step: _total(r["requests"].get(s))))
        figures.append(("first backup: S3 requests per GB stored", _requests_per_gb))
    return figures


def _scaled(value, unit):
    return None if value is None else value / unit


def _total(counts: dict | None) -> int | None:
    return None if counts is None else sum(counts.values())


def _requests_per_gb(row: dict) -> float | None:
    requests, stored = _total(row["requests"].get("first")), row["repo_bytes"].get("after_first")
    return None if requests is None or not stored else requests / (stored / 1e9)


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def reference_tool(rows: list[dict]) -> str | None:
    ok = [r["tool"] for r in rows if r["status"] == "ok"]
    return PREFERRED_REFERENCE if PREFERRED_REFERENCE in ok else (ok[0] if ok else None)


def ratios(rows: list[dict], target: str) -> dict[str, dict[str, float]]:
    """{tool: {figure: value / reference's value}} for the successful rows of a target."""
    ok = [r for r in rows if r["target"] == target and r["status"] == "ok"]
    reference = next((r for r in ok if r["tool"] == reference_tool(ok)), None)
    result = {}
    for row in ok:
        if row is reference:
            continue
        result[row["tool"]] = {}
        for label, value_of in _figures(target):
            value, base = value_of(row), value_of(reference)
            if value is not None and base:
                result[row["tool"]][label] = value / base
    return result


def target_table(rows: list[dict], target: str) -> list[str]:
    ok = [r for r in rows if r["target"] == target and r["status"] == "ok"]
    reference = reference_tool(ok)
    ordered = sorted(ok, key=lambda r: (r["tool"] != reference, r["tool"] != "corso", r["tool"]))
    header = ["figure"]
    for row in ordered:
        header.append(row["tool"])
        if row["tool"] != reference:
            header.append(f"×{reference}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    target_ratios = ratios(rows, target)
    for label, value_of in _figures(target):
        values = [value_of(r) for r in ordered]
        present = [v for v in values if v is not None]
        best = min(present) if present else None
        cells = [label]
        for row, value in zip(ordered, values, strict=True):
            text = _format(value)
            cells.append(f"**{text}**" if value is not None and value == best else text)
            if row["tool"] != reference:
                ratio = target_ratios[row["tool"]].get(label)
                cells.append("–" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _requests_breakdown(rows: list[dict]) -> list[str]:
    lines = ["| tool | step | requests by kind |", "|---|---|---|"]
    for row in rows:
        if row["target"] != "s3" or row["status"] != "ok":
            continue
        for step, counts in row["requests"].items():
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"
            lines.append(f"| {row['tool']} | {STEP_TITLES.get(step, step)} | {kinds} |")
    return lines


def _runs_table(rows: list[dict]) -> list[str]:
    repeated = [step for step in STEP_TITLES
                if any(len(r["steps"].get(step, {}).get("runs", [])) > 1 for r in rows)]
    lines = ["| tool | " + " | ".join(f"{STEP_TITLES[s]}: wall s" for s in repeated) + " |",
             "|---|" + "---|" * len(repeated)]
    for row in rows:
        if row["status"] != "ok":
            continue
        cells = [", ".join(_format(run["wall_s"]) for run in row["steps"][s]["runs"])
                 for s in repeated]
        lines.append(f"| {row['tool']} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict) -> str:
    machine, data = results["machine"], results["dataset"]
    cache = ("dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every timed step"
             if results["cold_cache"] else "NOT dropped (warm cache; not root, or switched off)")
    out = [
        "# corso vs restic vs borg: benchmark results",
        "",
        f"{results['date']}; {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB memory, Linux {machine['kernel']}; run took "
        f"{results['duration_s']} s. Page cache: {cache}.",
        "",
        f"Dataset: {data['files']:,} files, {data['bytes'] / MiB:,.0f} MiB (size {data['size']}, "
        f"seed {data['seed']}); the mutation changed {data['mutated_bytes'] / MiB:,.1f} MiB "
        f"({100 * data['mutated_bytes'] / data['bytes']:.1f} %).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "",
        "Wall and CPU time and peak RSS are of the whole process tree; lower is better "
        "everywhere, best in **bold**. Ratios are against the reference column's tool; only "
        "ratios from the same run mean anything on a shared machine. Every restore was verified "
        "byte for byte against the source, with every entry's mode and nanosecond mtime; a "
        "row that failed anything is listed below its "
        "table, not in it. Repository size is the sum of its files' (objects') sizes; S3 "
        "requests per GB stored are the first backup's requests over the repository's size "
        "after it. On S3 a tool's CPU time and memory are its own; the server (one "
        "SeaweedFS on this machine, serving every tool alike, its volumes large enough for a "
        "whole backup and each bucket written into once before any step is timed) shares the "
        "cores, and its CPU time during each step has its own row. A step's wall floor is "
        "(tool CPU + server CPU) / cores: no schedule of that work on this machine ends "
        "sooner.",
        "",
        f"The first backup and the full restore ran {results['repeat']} times per tool, the "
        "tools taking turns; their times are the medians of those runs (listed below each "
        "table), their peak RSS the largest. The other steps ran once.",
    ]
    for target in ("local", "s3"):
        rows = [r for r in results["rows"] if r["target"] == target]
        if not rows:
            continue
        title = "local filesystem" if target == "local" else "S3 on SeaweedFS"
        out += ["", f"## {title}", ""] + target_table(results["rows"], target)
        out += [f"\n- {r['tool']}: {r['status']}" for r in rows if r["status"] != "ok"]
        if results["repeat"] > 1:
            out += ["", "Wall times of each run, in order:", ""] + _runs_table(rows)
        if target == "s3":
            out += ["", "S3 requests by kind, counted at the server "
                    "(`SeaweedFS_s3_request_total`; HEAD counts as GET):", ""]
            out += _requests_breakdown(results["rows"])
    if results["skipped"]:
        out += ["", "## Skipped", ""]
        out += [f"- {name}: {reason}" for name, reason in results["skipped"].items()]
    out += ["", "## Memory scaling (corso first backup, local)", ""]
    scaling = results["memory_scaling"]
    if isinstance(scaling, dict):
        out.append(
            f"Peak RSS {scaling['peak_rss_1x_bytes'] / MiB:,.0f} MiB at size {scaling['size_1x']}, "
            f"{scaling['peak_rss_4x_bytes'] / MiB:,.0f} MiB at size {scaling['size_4x']} "
            f"(×{scaling['ratio']}); the 4× backup took {scaling['wall_4x_s']:.1f} s."
        )
        per_entry = results["index"]["bytes_per_entry"]
        if scaling.get("chunks_4x"):
            out.append(f"Its index of {scaling['chunks_4x']:,} chunks accounts for about "
                       f"{scaling['chunks_4x'] * per_entry / 1024:,.0f} KiB of that "
                       f"({per_entry} bytes per entry, below).")
    else:
        out.append(scaling)
    out += ["", "## Building blocks (single core, MB/s, best of 3)", "",
            "| stage | text-like | random |", "|---|---|---|"]
    for stage, figures in results["micro"].items():
        if isinstance(figures, dict):
            out.append(f"| {stage} | {figures['text']:,.0f} | {figures['random']:,.0f} |")
        else:
            out.append(f"| {stage} | {figures} | |")
    out += ["", "## In-memory index (corso_core.repo.index)", ""]
    index = results["index"]
    out.append(f"{index['entries']:,} entries: {index['bytes_per_entry']} bytes per entry, "
               f"{index['lookups_per_s']:,} lookups/s; loaded from an index blob at "
               f"{index['loads_per_s']:,} entries/s.")
    return "\n".join(out) + "\n"


def chart(results: dict, path: Path) -> None:
    """Bars of each tool's ratio against the reference, per target, for the headline figures."""
    import matplotlib  # the bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headline = {f"{title}: wall s": f"{title}\nwall time" for title in STEP_TITLES.values()}
    headline["first backup: peak RSS MiB"] = "first backup\npeak RSS"
    headline["repository MiB at the end"] = "repository\nsize"
    targets = [t for t in ("local", "s3") if ratios(results["rows"], t)]
    figure, axes = plt.subplots(len(targets) or 1, 1, figsize=(10, 4 * max(1, len(targets))),
                                squeeze=False)
    for axis, target in zip(axes[:, 0], targets, strict=False):
        by_tool = ratios(results["rows"], target)
        reference = reference_tool([r for r in results["rows"] if r["target"] == target])
        width = 0.8 / len(by_tool)
        for i, (tool, figures) in enumerate(sorted(by_tool.items(), key=lambda t: t[0] != "corso")):
            xs = [j + i * width for j in range(len(headline))]
            axis.bar(xs, [figures.get(label, 0) for label in headline], width, label=tool)
        axis.axhline(1, color="black", linewidth=0.8)
        axis.set_xticks([j + 0.4 - width / 2 for j in range(len(headline))])
        axis.set_xticklabels(headline.values(), fontsize=8)
        axis.set_ylabel(f"ratio to {reference} (lower is better)")
        axis.set_title(f"{target}: ratio to {reference}")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _replace(path: Path, write) -> None:
    """Write through a temporary file and rename, so a reader never sees half a result."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")  # same suffix: same format
    write(temporary)
    temporary.replace(path)


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _replace(out / "results.json", lambda p: p.write_text(json.dumps(results, indent=2) + "\n"))
    _replace(out / "results.md", lambda p: p.write_text(markdown(results)))
    _replace(out / "results.png", lambda p: chart(results, p))
