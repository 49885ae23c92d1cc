"""S3 Object Lock: every blob written is locked against deletion and overwrite for a while.

A locked bucket is versioned, so a delete only adds a delete marker and the locked version
stays recoverable until its retention ends. AWS rejects a PUT or UploadPart with lock
parameters unless it carries Content-MD5 or an x-amz-checksum-* header; botocore adds a CRC32
checksum to every upload by default and corso-s3 never turns that off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from corso_core.api import UsageError

MODES = ("none", "governance", "compliance")
_DURATION = re.compile(r"(\d+)([hdy])")
_UNIT_HOURS = {"h": 1, "d": 24, "y": 24 * 365}


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

    @classmethod
    def from_dict(cls, record: dict) -> ObjectLock:
        return cls(record["mode"].upper(), timedelta(hours=record["duration_hours"]),
                   bool(record.get("extend")))

    def as_dict(self) -> dict:
        return {
            "mode": self.mode.lower(),
            "duration_hours": int(self.duration.total_seconds() // 3600),
            "extend": self.extend,
        }


def parse_duration(text: str) -> timedelta:
    """'30d', '720h' or '1y' as a timedelta; anything else is a usage error."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise UsageError(
            f"invalid --retention-duration {text!r}: give a positive whole number of hours, "
            "days or years, e.g. 720h, 30d or 1y"
        )
    return timedelta(hours=int(match.group(1)) * _UNIT_HOURS[match.group(2)])


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
