"""What `repo status` adds for upkeep: backups, blobs and bytes by kind, and when maintenance
and verify last ran (by the storage's clock) with what they found and the requests by kind
they made (what they cost on metered storage)."""

from __future__ import annotations

from datetime import UTC, datetime

from corso_core.engine.progress import counted
from corso_core.errors import Corrupted
from corso_core.repo import names
from corso_core.upkeep.maintenance import space
from corso_core.upkeep.records import MAINTAINED, OWNER, VERIFIED, read_record


def _when(name: str, repository) -> dict | None:
    try:
        found = read_record(repository, name)
    except Corrupted as e:
        return {"damaged": str(e)}
    if found is None:
        return None
    record, mtime = found
    return {**record, "at": datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")}


def upkeep_status(repository, blobs) -> dict:
    """From `blobs`, the listing of the whole repository that status made already. Its
    kinds add up to the whole: "other" holds the format blob and its copy, the upkeep
    records, and anything else found there."""
    by_kind = space(blobs)
    by_kind["other"] = {
        "objects": len(blobs) - sum(kind["objects"] for kind in by_kind.values()),
        "bytes": sum(b.size for b in blobs) - sum(kind["bytes"] for kind in by_kind.values()),
    }
    return {
        "backups": by_kind[names.MANIFEST]["objects"],
        "blobs_by_kind": by_kind,
        "last_maintenance": _when(MAINTAINED, repository),
        "last_verify": _when(VERIFIED, repository),
        "maintenance_owner": _when(OWNER, repository),
    }


def status_lines(status: dict) -> list[str]:
    def last(what: dict | None, summary) -> str:
        if what is None:
            return "never"
        if "damaged" in what:
            return what["damaged"]
        return f"{what['at']} ({summary(what)})"

    def requests(what: dict) -> str:
        made = what.get("requests") or {}
        return "; requests: " + (", ".join(f"{n} {kind}" for kind, n in made.items()) or "none")

    lines = [f"backups:        {status['backups']}"]
    lines += [f"  {kind + ':':14}{v['objects']} ({counted(v['bytes'], 'byte')})"
              for kind, v in status["blobs_by_kind"].items()]
    lines.append("last maintenance: " + last(
        status["last_maintenance"], lambda m: f"{m.get('mode')}, by {m.get('user')}@"
                                              f"{m.get('host')}{requests(m)}"))
    lines.append("last verify:      " + last(
        status["last_verify"], lambda v: ("clean" if v.get("clean") else
                                          counted(v.get('problems'), "problem"))
        + f", {v.get('packs_read')} of {counted(v.get('packs'), 'pack')} read{requests(v)}"))
    return lines
