"""`corso repo verify|maintenance|repair`: thin wrappers around corso_core.upkeep."""

from __future__ import annotations

import click

from corso_core.cli import output
from corso_core.cli.connection import uses_repository
from corso_core.cli.progress import human_bytes, progress_for
from corso_core.errors import Corrupted
from corso_core.repo.repository import Repository
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
    report = verify(repository, ALL if read_data else read_data_subset,
                    progress_for("verifying"))
    lines = [f"{report.backups} backups, {report.packs} packs checked; "
             f"{report.packs_read} packs read ({human_bytes(report.bytes_read)})."]
    if report.unindexed_packs:
        lines.append(f"{report.unindexed_packs} packs are not indexed (left by interrupted "
                     "backups; maintenance removes them).")
    lines += [f"damaged: {p['blob']}: {p['problem']}" for p in report.problems]
    for backup_id, lost in sorted(report.damaged_backups.items()):
        lines.append(f"backup {backup_id} cannot be fully restored:")
        lines += [f"  {what}" for what in lost]
    lines.append("No problems found." if report.clean else "")
    output.emit(report.as_dict(), "\n".join(lines).rstrip())
    if not report.clean:
        raise Corrupted(f"verify found {len(report.problems)} damaged blob(s) affecting "
                        f"{len(report.damaged_backups)} backup(s); see above, and run corso "
                        "repo repair for lost index blobs")


COMMANDS = [verify_command]
