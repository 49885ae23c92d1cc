"""`corso backup create|list|details|delete NAME`: thin wrappers around the engine."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime

import click

from corso_core.cli import output
from corso_core.cli.progress import human_bytes, progress_for
from corso_core.cli.sources import SourceGroup, backup_option, backups_option
from corso_core.engine.backup import BackupOptions, run_backup
from corso_core.engine.browse import Globs, TreeLoader, path_text, walk_entries
from corso_core.engine.progress import Problems, counted
from corso_core.errors import Corrupted, CorsoError, Incomplete, NotFound, UsageError
from corso_core.repo.manifests import (
    delete_command,
    delete_manifests,
    list_manifests,
    load_manifest,
)
from corso_core.repo.store import ChunkStore
from corso_core.sources.source import SYMLINK, Source


@click.group()
def backup() -> None:
    """Create, list, inspect and delete backups."""


def _tags(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE labels: UTF-8, a key of printable characters without spaces, a printable
    value, each key once (a second value would silently replace the first)."""
    tags: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        if not _is_utf8(value):  # bytes the command line could not decode (as \udcXX)
            raise click.BadParameter(f"{os.fsencode(value)!r} is not UTF-8 text")
        if not key.isprintable() or any(c.isspace() for c in key):
            raise click.BadParameter(f"tag key {key!r} holds a space or a control character")
        if not val.isprintable():
            raise click.BadParameter(f"tag {key}: the value holds a control character")
        if key in tags:
            raise click.BadParameter(f"tag {key} is given twice")
        tags[key] = val
    return tags


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _source_manifest(repository, source: Source, backup_id: str) -> dict:
    manifest = load_manifest(repository, backup_id)
    if manifest.get("source") != source.name:
        raise UsageError(f"backup {backup_id} is a {manifest.get('source')} backup, "
                         f"not {source.name}")
    return manifest


def _read_rate(stats) -> str:
    """` (… read/s)`: the rate the backup's files were read at, none when none was (an
    unchanged file's bytes are not read, and counted in made a re-backup 340 GiB/s)."""
    if not stats.bytes_read or not stats.duration_s:
        return ""
    return f" ({human_bytes(stats.bytes_read / stats.duration_s)}/s read)"


def _create(source: Source):
    def create(repository, tag, ignore_inode, ignore_ctime, **values) -> None:
        problems = Problems(notify=output.say)
        result = run_backup(repository, source, values,
                            BackupOptions(tag, ignore_inode, ignore_ctime),
                            problems, progress_for("backing up"))
        s = result.stats
        requests = repository.storage.counts.as_dict()
        output.emit(
            {**result.manifest, "storage": requests, "errors": problems.errors,
             "warnings": problems.warnings},
            f"Backup {result.backup_id} created"
            f"{' (INCOMPLETE)' if s.errors else ''}.\n"
            f"files:    {s.files_new} new, {s.files_changed} changed, "
            f"{s.files_unchanged} unchanged ({counted(s.dirs, 'dir')}, "
            f"{counted(s.symlinks, 'symlink')})\n"
            f"size:     {human_bytes(s.bytes_total)}, read {human_bytes(s.bytes_read)}, "
            f"added {human_bytes(s.bytes_added)} after dedup and compression\n"
            f"time:     {s.duration_s:.2f} s{_read_rate(s)}\n"
            f"requests: " + (", ".join(f"{k} {v}" for k, v in requests["requests"].items())
                             or "none"),
        )
        if s.errors:
            raise Incomplete(f"backup {result.backup_id} is incomplete: "
                             f"{counted(s.errors, 'item')} could not be read (listed above)")

    options = [
        *source.backup_options,
        click.Option(["--tag"], multiple=True, metavar="KEY=VALUE", callback=_tags,
                     help="Label the backup (repeatable)."),
        click.Option(["--ignore-inode"], is_flag=True,
                     help="Do not compare inode numbers to find unchanged files (FUSE, NFS)."),
        click.Option(["--ignore-ctime"], is_flag=True,
                     help="Do not compare ctimes to find unchanged files."),
    ]
    return options, create


def _listed(m: dict) -> dict:
    """A manifest's row in `backup list`."""
    stats = m["stats"]
    return {
        "id": m["id"], "time": str(m["time"]), "host": str(m["host"]),
        "paths": [str(p) for p in m["paths"]], "tags": dict(m["tags"]),
        "incomplete": bool(m["incomplete"]),
        "files": int(stats["files_new"]) + int(stats["files_changed"])
        + int(stats["files_unchanged"]),
        "size": int(stats["bytes_total"]), "added": int(stats["bytes_added"]),
    }


def _list(source: Source):
    def list_backups(repository) -> None:
        damaged: dict[str, str] = {}  # ID -> why, whatever the source (it is in the manifest)
        data = []
        for m in list_manifests(repository, on_damaged=damaged.__setitem__):
            if m.get("source") != source.name:
                continue
            try:
                data.append(_listed(m))
            except (KeyError, TypeError, ValueError) as e:  # authentic, yet not the engine's
                damaged[m["id"]] = f"its fields are not the engine's ({e!r})"
        data.sort(key=lambda r: r["time"])
        lines = [f"{'ID':<16} {'TIME':<20} {'HOST':<12} {'FILES':>7} {'SIZE':>10} "
                 f"{'ADDED':>10}  PATHS / TAGS"]
        for r in data:
            tags = " ".join(f"{k}={v}" for k, v in sorted(r["tags"].items()))
            lines.append(
                f"{r['id']:<16} {_utc(r['time']):<20} {r['host'][:12]:<12} {r['files']:>7} "
                f"{human_bytes(r['size']):>10} {human_bytes(r['added']):>10}  "
                f"{' '.join(map(_one_line, r['paths']))}{'  ' + tags if tags else ''}"
                f"{'  (incomplete)' if r['incomplete'] else ''}")
        output.emit(data, "\n".join(lines) if data else
                    f"No {source.name} backups {'that can be read' if damaged else 'yet'}.")
        for backup_id, why in damaged.items():
            output.warn(f"backup {backup_id} is left out of this list: its manifest is "
                        f"damaged ({why}); delete it with {delete_command([backup_id])}")
        if damaged:
            raise Incomplete(f"the list is incomplete: it leaves out "
                             f"{counted(len(damaged), 'backup')} with a damaged manifest "
                             "(named above)")

    return [], list_backups


def _details(source: Source):
    def details(repository, backup, path) -> None:
        manifest = _source_manifest(repository, source, backup)
        store = ChunkStore(repository, read_only=True)
        trees = TreeLoader(store)
        try:
            rows = []
            selection = Globs(path)
            for entry_path, entry in walk_entries(trees, bytes.fromhex(manifest["root"])):
                if not selection.match(entry_path):
                    continue
                meta = entry.meta
                rows.append({
                    "path": path_text(entry_path), "type": meta.kind,
                    "mode": stat.filemode(meta.mode | {"dir": stat.S_IFDIR, "file": stat.S_IFREG,
                                                       "symlink": stat.S_IFLNK}[meta.kind]),
                    "size": meta.size,
                    "mtime": datetime.fromtimestamp(meta.mtime_ns / 1e9, UTC).isoformat(),
                    "mtime_ns": meta.mtime_ns,
                    **({"target": os.fsdecode(meta.target)} if meta.kind == SYMLINK else {}),
                })
        finally:
            trees.close()
            store.close()
        if selection.unmatched():
            raise UsageError(f"nothing in backup {backup} matches "
                             f"{', '.join(selection.unmatched())}")
        output.emit(rows, "\n".join(
            f"{r['mode']} {r['size']:>12} {_utc(r['mtime'])} {path_text_line(r)}" for r in rows))

    return [
        backup_option("The backup to show."),
        click.Option(["--path"], multiple=True, metavar="GLOB",
                     help="Only entries whose path in the backup matches (repeatable)."),
    ], details


def path_text_line(row: dict) -> str:
    """The path (and a symlink's target) on one line: a newline, a control character or a
    byte that is not UTF-8 escaped as in a Python string."""
    return _one_line(row["path"]) + (f" -> {_one_line(row['target'])}" if "target" in row
                                     else "")


def _one_line(text: str) -> str:
    return text if text.isprintable() else repr(text)[1:-1]


def _delete(source: Source):
    def delete(repository, backups: list[str]) -> None:
        damaged, missing = [], []
        for backup_id in backups:  # every ID checked before anything is deleted
            try:
                _source_manifest(repository, source, backup_id)
            except Corrupted:
                damaged.append(backup_id)  # stored but unreadable: removing it is the way out
            except NotFound:
                missing.append(backup_id)
            except CorsoError as e:
                raise type(e)(f"{e}; nothing deleted") from None
        if missing:  # a typo, or a delete of several that stopped half-way: say which remain
            others = [backup_id for backup_id in backups if backup_id not in missing]
            raise NotFound(f"no backup {', '.join(missing)} in the repository at "
                           f"{repository.storage.location()}; nothing deleted"
                           + (f" (the others exist: --backups {','.join(others)})"
                              if others else f" (corso backup list {source.name} shows them)"))
        delete_manifests(repository, backups)
        output.emit({"deleted": backups, "damaged": damaged},
                    f"Deleted {counted(len(backups), 'backup')}: {', '.join(backups)}"
                    + (f" (with a damaged manifest: {', '.join(damaged)})" if damaged else "")
                    + ". Their data stays until maintenance removes what no backup uses: "
                    "over two runs an hour apart, once it is an hour old.")

    return [backups_option("Backups to delete, comma-separated (repeatable).")], delete


def _utc(iso_time: str) -> str:
    """A time of the JSON (UTC, `+00:00`) in a text column: to the second, marked `Z` (UTC),
    so that it is not read as the local time."""
    return iso_time[:19] + "Z"


backup.add_command(SourceGroup("create", _create, warms_up=True, help="Back up a source."))
backup.add_command(SourceGroup("list", _list, help="List the backups of a source."))
backup.add_command(SourceGroup("details", _details, help="List the entries of one backup."))
backup.add_command(SourceGroup("delete", _delete, help="Delete backups (their manifests)."))
