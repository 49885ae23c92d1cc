"""`corso restore NAME --backup ID …`: a thin wrapper around the restore engine."""

from __future__ import annotations

import click

from corso_core.cli import output
from corso_core.cli.progress import human_bytes, progress_for
from corso_core.cli.sources import SourceGroup, backup_option
from corso_core.engine.progress import Problems, counted
from corso_core.engine.restore import run_restore
from corso_core.errors import Incomplete
from corso_core.sources.source import Source


def _restore(source: Source):
    def restore(repository, backup, path, collisions, **values) -> None:
        problems = Problems(notify=output.say)
        s = run_restore(repository, source, values, backup, list(path), collisions, problems,
                        progress_for("restoring"))
        rate = s.bytes_written / s.duration_s if s.duration_s else 0
        output.emit(
            {"backup": backup, **vars(s), "errors": problems.errors,
             "warnings": problems.warnings, "storage": repository.storage.counts.as_dict()},
            f"Restored backup {backup}: {counted(s.files, 'file')}, {counted(s.dirs, 'dir')}, "
            f"{counted(s.symlinks, 'symlink')}, {counted(s.hard_links, 'hard link')}; "
            f"{s.skipped} skipped (--collisions {collisions}), "
            f"{s.errors} failed.\n"
            f"{human_bytes(s.bytes_written)} in {s.duration_s:.2f} s ({human_bytes(rate)}/s)",
        )
        if problems.errors:
            raise Incomplete(f"restore of backup {backup} is incomplete: "
                             f"{counted(len(problems.errors), 'item')} not restored (listed above)")

    return [
        backup_option("The backup to restore."),
        *source.restore_options,
        click.Option(["--path"], multiple=True, metavar="GLOB",
                     help="Restore only entries whose path in the backup matches (repeatable)."),
        click.Option(["--collisions"], type=click.Choice(list(source.collisions)),
                     default=source.collisions[0], show_default=True,
                     help="What to do with a name already in the destination."),
    ], restore


restore = SourceGroup("restore", _restore, storage_first=True, help="Restore a backup.")
