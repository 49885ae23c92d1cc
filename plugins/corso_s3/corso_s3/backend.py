"""The `s3` backend as the core sees it: its name, its flags, its factory, its access check.

The factory and the probe import boto3 (about 0.2 s and 20 MB) only when called: every corso
command registers this backend, most never touch S3.
"""

from __future__ import annotations

from corso_core.api import StorageBackend, hookimpl
from corso_s3 import options


def open_storage(values):
    from corso_s3.factory import open_storage

    return open_storage(values)


def check_access(values):
    from corso_s3.access import check_access

    return check_access(values)


@hookimpl
def register_backends(register):
    register(
        StorageBackend(
            name="s3",
            description="an S3 or S3-compatible bucket",
            options=[*options.connection_options(), *options.retention_options()],
            open=open_storage,
            secret_options=options.SECRETS,
            init_only=options.INIT_ONLY,
            check_access=check_access,
        )
    )
