"""`corso repo check-access s3`: try every S3 action a repository needs, before init.

Each probe works under a scratch key inside the prefix and the probes clean up after
themselves (as far as the permissions they test allow). A failed probe names the IAM
permission it needs, so a user can fix the policy before any backup depends on it.

A first probe that fails for another reason than its permission (no such bucket, an endpoint
out of reach, refused credentials) ends the check with that error: every other probe would
fail the same way (an unreachable endpoint, after a minute of retries each).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from corso_core.api import AlreadyExists, CorsoError
from corso_s3.errors import ActionDenied
from corso_s3.factory import unchecked_storage, use_bucket_region
from corso_s3.permissions import permission_for


def check_access(values: Mapping[str, Any]) -> list[dict]:
    """One row per S3 action: action, permission, ok, error (empty when ok)."""
    storage = unchecked_storage(values)
    scratch = f"corso-check-access-{secrets.token_hex(6)}"
    key = storage.prefix + scratch
    rows: list[dict] = []
    state: dict[str, Any] = {}

    def probe(action: str, run, needs: str | None = None) -> None:
        row = {"action": action, "permission": permission_for(action), "ok": False, "error": ""}
        if needs and needs not in state:
            row["error"] = f"not tried: {needs} failed"
        else:
            try:
                state[action] = run()
                row["ok"] = True
            except ActionDenied as e:
                row["error"] = str(e)
            except CorsoError as e:
                if not rows:
                    raise
                row["error"] = str(e)
        rows.append(row)

    def request(operation: str, **params):
        return storage.request(operation, scratch, **params)

    try:
        if not values.get("region"):  # given, the region is never asked: no row
            probe("GetBucketLocation", lambda: use_bucket_region(storage, values))
        probe("PutObject", lambda: request("PutObject", Key=key, Body=b"corso access check"))
        probe("GetObject", lambda: request("GetObject", Key=key)["Body"].read(), "PutObject")
        rows.append(_conditional_create(request, key, "PutObject" in state))
        probe("ListObjectsV2", lambda: request("ListObjectsV2", Prefix=key))
        probe("CreateMultipartUpload",
              lambda: request("CreateMultipartUpload", Key=key + ".mp")["UploadId"])
        probe("UploadPart", lambda: request(
            "UploadPart", Key=key + ".mp", UploadId=state["CreateMultipartUpload"], PartNumber=1,
            Body=b"part"), "CreateMultipartUpload")
        probe("ListMultipartUploads", lambda: request("ListMultipartUploads", Prefix=key))
        probe("AbortMultipartUpload", lambda: request(
            "AbortMultipartUpload", Key=key + ".mp", UploadId=state["CreateMultipartUpload"]),
            "CreateMultipartUpload")
        probe("DeleteObject", lambda: request("DeleteObject", Key=key), "PutObject")
    finally:
        storage.close()
    return rows


def _conditional_create(request, key: str, exists: bool) -> dict:
    """Whether the store refuses a PUT with If-None-Match: * over an existing object, which is
    what makes two concurrent inits safe (the README says what happens where it does not)."""
    row = {"action": "PutObject If-None-Match", "permission": permission_for("PutObject"),
           "ok": False, "error": ""}
    if not exists:
        row["error"] = "not tried: PutObject failed"
        return row
    try:
        request("PutObject", Key=key, Body=b"corso access check", IfNoneMatch="*")
        row["error"] = "the store ignores If-None-Match: concurrent inits are not safe here"
    except AlreadyExists:
        row["ok"] = True
    except CorsoError as e:
        row["error"] = f"no conditional writes ({e}): concurrent inits are not safe here"
    return row

