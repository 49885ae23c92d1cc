"""S3 Object Lock: every blob written is locked against deletion and overwrite for a while.

A locked bucket is versioned, so a delete only adds a delete marker and the locked version
stays recoverable until its retention ends. AWS rejects a PUT or UploadPart with lock
parameters unless it carries Content-MD5 or an x-amz-checksum-* header; every upload carries
its body's CRC32 (body.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from corso_core.api import UsageError

MODES = ("none", "governance", "compliance")
_DURATION = re.compile(r"(\d{1,9})([hdy])")  # more digits: past the limit below anyway
_UNIT_HOURS = {"h": 1, "d": 24, "y": 24 * 365}
#: S3's own limit on a retention period: 100 years.
MAX_HOURS = 100 * 365 * 24
#: The record of a repository made without retention. Written all the same, so that a record
#: that is missing (deleted, or hidden behind a delete marker) is never taken for this one.
NO_LOCK = {"mode": "none"}


@dataclass(frozen=True)
class ObjectLock:
    mode: str  # "GOVERNANCE" or "COMPLIANCE"
    duration: timedelta
    extend: bool = False

    def put_parameters(self) -> dict:
        """The lock headers of one PutObject or CreateMultipartUpload."""
        return {
            "ObjectLockMode": self.mode,
            "ObjectLockRetainUntilDate": datetime.now(UTC) + self.duration,
        }

    def as_dict(self) -> dict:
        return {
            "mode": self.mode.lower(),
            "duration_hours": int(self.duration.total_seconds() // 3600),
            "extend": self.extend,
        }


def from_record(record: object) -> ObjectLock | None:
    """The lock a record holds, None for NO_LOCK; ValueError if it is not one this corso-s3
    writes."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record == NO_LOCK:
        return None
    mode, hours = record.get("mode"), record.get("duration_hours")
    if mode not in ("governance", "compliance"):
        raise ValueError(f"mode {mode!r} is neither governance nor compliance (nor 'none' "
                         "without other settings)")
    if type(hours) is not int or not 0 < hours <= MAX_HOURS:
        raise ValueError(f"duration_hours {hours!r} is not a whole number from 1 to "
                         f"{MAX_HOURS}")
    return ObjectLock(mode.upper(), timedelta(hours=hours), record.get("extend") is True)


def parse_duration(text: str) -> timedelta:
    """'30d', '720h' or '1y' as a timedelta; anything else is a usage error."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise UsageError(
            f"invalid --retention-duration {text!r}: give a positive whole number of hours, "
            "days or years, e.g. 720h, 30d or 1y"
        )
    hours = int(match.group(1)) * _UNIT_HOURS[match.group(2)]
    if hours > MAX_HOURS:
        raise UsageError(f"invalid --retention-duration {text!r}: S3 keeps a retention of at "
                         "most 100 years")
    return timedelta(hours=hours)


def from_flags(mode: str | None, duration: str | None, extend: bool | None) -> ObjectLock | None:
    """The lock the init flags ask for, or None; the flags must come as a pair."""
    if mode in (None, "none"):
        if duration or extend:
            raise UsageError(
                "--retention-duration and --extend-retention need --retention-mode "
                "governance or compliance"
            )
        return None
    if not duration:
        raise UsageError(f"--retention-mode {mode} needs --retention-duration (e.g. 30d)")
    return ObjectLock(mode.upper(), parse_duration(duration), bool(extend))


def flags_given(mode: str | None, duration: str | None, extend: bool | None) -> str | None:
    """The init flags as given, for a message; None if none was."""
    given = [f"--retention-mode {mode}" if mode else "",
             f"--retention-duration {duration}" if duration else "",
             "--extend-retention" if extend else ""]
    return " ".join(flag for flag in given if flag) or None


def described(lock: ObjectLock | None) -> str:
    """A lock in words, as a message names what a repository records."""
    if lock is None:
        return "mode none"
    hours = int(lock.duration.total_seconds() // 3600)
    extended = ", extended by maintenance" if lock.extend else ""
    return f"mode {lock.mode.lower()} for {hours}h{extended}"
