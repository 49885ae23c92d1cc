"""`corso repo verify|maintenance|repair`: thin wrappers around corso_core.upkeep."""

from __future__ import annotations

import click

from corso_core.cli import output
from corso_core.cli.connection import uses_repository
from corso_core.cli.progress import human_bytes, progress_for
from corso_core.engine.progress import counted
from corso_core.errors import Corrupted, UsageError
from corso_core.repo import names
from corso_core.repo.manifests import delete_command
from corso_core.repo.repository import Repository
from corso_core.upkeep.maintenance import SPACE_KINDS, run_maintenance
from corso_core.upkeep.records import default_owner
from corso_core.upkeep.repair import run_repair
from corso_core.upkeep.verify import ALL, parse_subset, verify


def _subset(ctx, param, value):
    return None if value is None else parse_subset(value)


@click.command("verify")
@click.option("--read-data", is_flag=True,
              help="Also download every pack, authenticate and re-hash every chunk.")
@click.option("--read-data-subset", metavar="N%|n/t", callback=_subset,
              help="Read a random N% of the packs, or slice n of t (each pack in one slice).")
@uses_repository
def verify_command(repository: Repository, read_data: bool, read_data_subset) -> None:
    """Check that every backup can be restored; name each damaged blob, backup and file."""
    if read_data and read_data_subset:
        raise UsageError("give --read-data (every pack) or --read-data-subset, not both")
    report = verify(repository, ALL if read_data else read_data_subset,
                    progress_for("verifying"))
    lines = [f"{counted(report.backups, 'backup')}, {counted(report.packs, 'pack')} checked; "
             f"{counted(report.packs_read, 'pack')} read ({human_bytes(report.bytes_read)})."]
    if report.unindexed_packs:
        lines.append(f"Not indexed: {counted(report.unindexed_packs, 'pack')} (left by "
                     "interrupted backups, or listed in a lost index blob: repo repair indexes "
                     "such packs again; maintenance removes those no backup uses).")
    lines += [f"damaged: {p['blob']}: {p['problem']}" for p in report.problems]
    for backup_id, lost in sorted(report.damaged_backups.items()):
        lines.append(f"backup {backup_id} cannot be fully restored:")
        lines += [f"  {what}" for what in lost]
    lines.append("No problems found." if report.clean else "")
    output.emit(report.as_dict(), "\n".join(lines).rstrip())
    if not report.clean:
        raise Corrupted(f"verify found {counted(len(report.problems), 'damaged blob')} "
                        f"affecting {counted(len(report.damaged_backups), 'backup')}; see above; "
                        + "; ".join(_what_to_do(report)))


def _what_to_do(report) -> list[str]:
    """The way out for each kind of damage verify found: repair rebuilds indexes, a damaged
    manifest can only be deleted, and damaged data is gone unless a file still holds it."""
    def damaged(kind: str) -> list[str]:
        return [name for p in report.problems
                if (name := names.parse_key(kind, p["blob"])) is not None]

    advice = []
    if damaged(names.INDEX) or (report.unindexed_packs and report.damaged_backups):
        advice.append("run corso repo repair to rebuild the index from the packs")
    if manifests := damaged(names.MANIFEST):
        advice.append(f"delete the backups with a damaged manifest: {delete_command(manifests)}")
    packs = {names.key(kind, name) for kind in names.PACK_KINDS for name in damaged(kind)}
    if packs:
        repair = ("corso repo repair" if packs <= report.lost_packs  # nothing to read for
                  else "corso repo repair --read-data")
        advice.append("what is named above as damaged data cannot be restored from this "
                      f"repository; {repair} lets the next backup store it again")
    if damaged(names.UPKEEP) or damaged(names.SESSION):
        advice.append("run corso repo maintenance, which writes the upkeep records again and "
                      "removes stale sessions (repair leaves them)")
    if not advice and report.damaged_backups:  # chunks damaged or out of the index
        advice.append("run corso repo repair --read-data, which takes damaged chunks out of "
                      "the index, then back up again: the next backup stores what is missing "
                      "from the files that still hold it; a backup still named after that has "
                      f"lost it for good: {delete_command(report.damaged_backups)}")
    return advice or ["run corso repo repair"]


def _percent(ctx, param, value: str) -> float:
    text = value.strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        percent = -1.0
    if not 0 <= percent <= 100:
        raise UsageError(f"--max-unused {value!r} is not a percentage from 0% to 100%")
    return percent


def _space_lines(before: dict, after: dict) -> list[str]:
    lines = [f"{'':12}{'objects before':>16}{'after':>10}{'bytes before':>16}{'after':>12}"]
    for kind in SPACE_KINDS:
        b, a = before.get(kind, {}), after.get(kind, {})
        lines.append(f"{kind:12}{b.get('objects', 0):>16}{a.get('objects', 0):>10}"
                     f"{human_bytes(b.get('bytes', 0)):>16}{human_bytes(a.get('bytes', 0)):>12}")
    return lines


def _owner_part(ctx, param, value: str | None) -> str | None:
    """A user or host name for the owner record: shown in others' errors, so one line."""
    if value is not None and (not value or not value.isprintable()):
        raise click.BadParameter("must be printable and not empty")
    return value


@click.command("maintenance")
@click.option("--mode", type=click.Choice(["metadata", "complete"]), default="complete",
              show_default=True,
              help="metadata: merge index blobs, clean sessions and upload leftovers; "
                   "complete: also reclaim the space of data no backup uses.")
@click.option("--max-unused", default="5%", show_default=True, callback=_percent,
              help="Rewrite packs until unused space is under this share of pack bytes.")
@click.option("--safety", type=click.Choice(["full", "none"]), default="full",
              show_default=True,
              help="none: no safety window, only for a repository no other client writes to.")
@click.option("--user", callback=_owner_part,
              help="Owner of maintenance (default: the current user).")
@click.option("--host", callback=_owner_part,
              help="Host of the owner (default: this host's name).")
@click.option("--force", is_flag=True, help="Take over maintenance from another owner.")
@uses_repository
def maintenance_command(repository: Repository, mode: str, max_unused: float, safety: str,
                        user: str | None, host: str | None, force: bool) -> None:
    """Merge index blobs and reclaim space, safely beside running backups."""
    default_user, default_host = default_owner()
    if safety == "none":
        output.warn("--safety none: no safety window; run it only when no other client "
                    "writes to this repository")
    report = run_maintenance(repository, mode=mode, max_unused=max_unused, safety=safety,
                             user=user or default_user, host=host or default_host,
                             force=force, progress=progress_for("maintenance"))
    output.emit(report.as_dict(), "\n".join([
        f"Maintenance ({mode}, safety {safety}) done.",
        f"index blobs merged: {report.index_blobs_merged}; dead sessions removed: "
        f"{report.sessions_removed}; upload leftovers removed: "
        f"{report.upload_leftovers_removed}",
        f"deletion plans: {report.plans_made} made, {report.plans_finished} finished, "
        f"{report.plans_waiting} waiting for the safety window or running backups",
        f"packs: {report.packs_deleted} deleted, {report.packs_rewritten} rewritten, "
        f"{report.packs_kept} kept (planned, then used again), {report.packs_too_young} "
        "unused but younger than the safety window (a later run takes them), "
        f"{report.packs_locked} left until their "
        "Object Lock retention ends; retention extended on "
        f"{counted(report.retention_extended, 'blob')}",
        *_space_lines(report.before, report.after),
    ]))


@click.command("repair")
@click.option("--read-data", is_flag=True,
              help="Also read every pack and take each damaged chunk out of the index, so the "
                   "next backup stores it again.")
@uses_repository
def repair_command(repository: Repository, read_data: bool) -> None:
    """Rebuild lost or damaged index blobs from the packs; name incomplete backups."""
    report = run_repair(repository, progress_for("repairing"), read_data=read_data)
    lines = [f"{counted(report.packs_indexed, 'pack')} indexed again in "
             f"{counted(report.index_blobs_written, 'new index blob')}; "
             f"{counted(len(report.removed), 'damaged blob')} removed."]
    if report.lost_packs_forgotten:
        lines.append(f"{counted(len(report.lost_packs_forgotten), 'lost pack')} taken out of "
                     "the index: the next backup stores the lost chunks again from the "
                     "files that still have them.")
        lines += [f"lost: {key}" for key in report.lost_packs_forgotten]
    if report.damaged_chunks_dropped:
        lines.append(f"{counted(report.damaged_chunks_dropped, 'damaged chunk')} taken out of "
                     "the index: the next backup stores such chunks again from the files that "
                     "still have them.")
    lines += [f"removed: {key}" for key in report.removed]
    lines += [f"unreadable: {key}: {why}" for key, why in report.unreadable_packs.items()]
    for backup_id, lost in sorted(report.incomplete.items()):
        lines.append(f"backup {backup_id} cannot be restored whole now:")
        lines += [f"  {what}" for what in lost]
    for backup_id, why in sorted(report.damaged_manifests.items()):
        lines.append(f"backup {backup_id} has a damaged manifest, which cannot be rebuilt: "
                     f"{why}; its data may still be in the repository")
    output.emit(report.as_dict(), "\n".join(lines))
    unrepaired = []
    if report.incomplete:
        unrepaired.append(f"{counted(len(report.incomplete), 'backup')} cannot be restored "
                          "whole: data in use is not in the repository; a file's missing data "
                          "comes back when a backup of files that still hold it stores it "
                          "again, which makes such a backup whole; a lost directory listing (a "
                          "path ending in / or the root tree above) does not")
    if report.damaged_manifests:
        unrepaired.append(f"{counted(len(report.damaged_manifests), 'backup')} with a damaged "
                          f"manifest: delete with {delete_command(report.damaged_manifests)}")
    if unrepaired:
        raise Corrupted("; ".join(unrepaired) + " (see above)")


COMMANDS = [verify_command, maintenance_command, repair_command]
