"""S3Storage: the core's BlobStorage on an S3 bucket, under one prefix.

Every call goes through `request`, which counts the request (retries included: metered stores
bill them) and turns boto3's exceptions into the core's. Retries with exponential backoff and
jitter happen inside botocore (standard mode, see client.py); by the time an error reaches
`request` it is final.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import Any
from xml.etree import ElementTree

from botocore import xform_name
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    IncompleteReadError,
)

from corso_core.api import (
    AlreadyExists,
    BlobInfo,
    BlobStorage,
    Bytes,
    Corrupted,
    NotFound,
    PermissionDenied,
    RepositoryError,
    StorageError,
    UsageError,
    check_key,
    is_blob_key,
)
from corso_s3.body import upload_body
from corso_s3.client import DEFAULT_REGION
from corso_s3.errors import ActionDenied, error_code, translate
from corso_s3.lock import NO_LOCK, ObjectLock, described, from_record
from corso_s3.receive import receive_into, release

log = logging.getLogger("corso.s3")

#: New requests for the rest of a response body that broke off (S3Storage._receive).
RESUMES = 5

MiB = 1024 * 1024
#: S3's smallest part (except the last).
MIN_PART_SIZE = 5 * MiB
DEFAULT_PART_SIZE = 16 * MiB
#: Blobs up to this size go in one PutObject: corso's packs (16–20 MiB) cost one request,
#: not four, and a PUT reads the caller's buffer without copying it just as a part does.
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB

#: The codes botocore gives a refused HEAD request, which has no body to name the error.
_BODILESS_REFUSALS = {"400", "403"}

#: Where the Object Lock settings of a repository are recorded, beside its blobs.
LOCK_RECORD = "s3-object-lock.json"

_KIND = {
    "PutObject": "PUT",
    "GetObject": "GET",
    "GetBucketLocation": "GET",
    "GetObjectLockConfiguration": "GET",
    "HeadObject": "HEAD",
    "ListObjectsV2": "LIST",
    "ListMultipartUploads": "LIST",
    "DeleteObject": "DELETE",
    "PutObjectRetention": "PUT",
    "GetBucketVersioning": "GET",
    "ListObjectVersions": "LIST",
}

#: The blobs holding the master key (the core's `format` and `format-copy`), wrapped under
#: the passphrase of the day they were written: an old version of either still opens the
#: repository with an old passphrase.
KEY_BLOBS = ("format", "format-copy")


class S3Storage(BlobStorage):
    """Blobs as objects named PREFIX + key in one bucket.

    Only keys that follow the core's naming scheme are listed, so whatever else lives under
    the prefix (or a sibling repository) is never seen, let alone deleted.
    """

    atomic_create = True

    def __init__(
        self,
        client,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str = "s3.amazonaws.com",
        part_size: int = DEFAULT_PART_SIZE,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        lock: ObjectLock | None = None,
        retention_flags: str | None = None,
    ) -> None:
        super().__init__()
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size {part_size} is below S3's minimum {MIN_PART_SIZE}")
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.part_size = part_size
        self._lock = lock
        #: The lock init's flags ask for, and those flags as given (None: no flag given).
        self._asked_lock = lock
        self._retention_flags = retention_flags
        #: Until this storage has read a blob, its first create-only put at the prefix's root
        #: is taken as `repo init` claiming the location (see _claim). Every command on an
        #: existing repository reads its format blob before writing anything.
        self._may_be_new = True
        self._lock_known = False
        self._versioning: str | None = None
        self._versioning_known = False
        self._told_of_kept_versions = False
        self._told_of_old_key_versions = False
        #: What put() wrote here: records such as a backup's session record, which the command
        #: that wrote them deletes again (see delete).
        self._put_here: set[str] = set()
        #: The region GetBucketLocation gave (factory.use_bucket_region), if it was asked.
        self.found_region: str | None = None
        self._count_lock = threading.Lock()
        self._settings_lock = threading.Lock()

    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def discovered_settings(self) -> dict[str, Any]:
        """Asked by `repo init` and `connect` once the repository opened, so also where the
        user hears that the bucket keeps what corso deletes, and that init's retention flags
        differ from what the repository records."""
        self._tell_of_kept_versions()
        self._tell_of_unapplied_retention()
        return {"region": self.found_region} if self.found_region else {}

    def _tell_of_kept_versions(self) -> None:
        """Warn, once per storage, that a versioned bucket keeps what corso deletes. Said at
        init and connect, and at a command's first delete that leaves a delete marker: the
        bucket may have been versioned since, and `backup delete` or maintenance then frees
        no space. Several threads may delete at once; only the first asks and warns."""
        with self._settings_lock:
            if self._told_of_kept_versions:
                return
            self._told_of_kept_versions = True
        versioning = self.bucket_versioning()
        if versioning:
            log.warning(
                "bucket %s has versioning %s: what corso deletes or overwrites stays in it as "
                "noncurrent versions, stored and billed (maintenance frees no space), until a "
                "lifecycle rule expires them: add one with NoncurrentVersionExpiration and "
                "ExpiredObjectDeleteMarker for %s", self.bucket, versioning, self.location())

    def _tell_of_unapplied_retention(self) -> None:
        """An init that found a repository there connects to it, which keeps the Object Lock
        settings recorded when it was made: flags asking for others would go unheeded unsaid.
        """
        if self._retention_flags is None:
            return
        recorded = self._object_lock()
        if recorded != self._asked_lock:
            log.warning("the repository at %s records Object Lock %s; %s was not applied (corso "
                        "cannot change the Object Lock settings of an existing repository)",
                        self.location(), described(recorded), self._retention_flags)

    # --- what the bucket is like -------------------------------------------------------------

    def bucket_region(self) -> str:
        """The bucket's region (GetBucketLocation); also proves the bucket and credentials."""
        region = self.request("GetBucketLocation").get("LocationConstraint") or DEFAULT_REGION
        return "eu-west-1" if region == "EU" else region

    def bucket_has_object_lock(self) -> bool:
        """Whether the bucket has Object Lock enabled. A store that does not implement
        the question has no Object Lock to speak of."""
        try:
            answer = self.request("GetObjectLockConfiguration")
        except StorageError as e:
            if error_code(e.__cause__) in ("ObjectLockConfigurationNotFoundError",
                                           "NotImplemented"):
                return False
            raise
        return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def bucket_versioning(self) -> str | None:
        """"Enabled" or "Suspended" when the bucket keeps old versions of what is overwritten
        or deleted; None when it never did, and when it may not be asked: the permission
        (s3:GetBucketVersioning) is optional, and so is this knowledge."""
        with self._settings_lock:
            if not self._versioning_known:
                try:
                    self._versioning = self.request("GetBucketVersioning").get("Status")
                except StorageError as e:
                    log.debug("cannot tell whether %s is versioned: %s", self.bucket, e)
                self._versioning_known = True
            return self._versioning

    def _object_lock(self) -> ObjectLock | None:
        """The lock every write carries: given at init, else recorded beside the repository.

        `repo init` records it before the first blob, with retention or without (mode "none"),
        see _claim, so every later process (another host, another config dir) keeps locking
        what it writes, and a record gone missing is not taken for a repository that never
        locked.
        """
        with self._settings_lock:
            if not self._lock_known:
                try:
                    self._lock = self._lock_recorded(self._get(LOCK_RECORD, None))
                except NotFound:
                    self._refuse_if_bucket_locks()
                    self._lock = None
                self._lock_known = True
            return self._lock

    def _lock_recorded(self, record: bytes) -> ObjectLock | None:
        """The lock the record holds; a damaged record stops every write, which would
        otherwise go unlocked or be refused by the store for reasons it does not give."""
        try:
            return from_record(json.loads(record))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise Corrupted(f"the Object Lock record {self._where(LOCK_RECORD)} is damaged "
                            f"({e}); put back its earlier version, which a versioned "
                            'bucket keeps, or {"mode": "none"} for a repository made without '
                            "retention") from None

    def _refuse_if_bucket_locks(self) -> None:
        """The record is missing (a delete marker hiding it looks the same: 404). On a bucket
        without Object Lock that is a repository made by a corso-s3 that recorded nothing
        without retention: nothing to lock. On a bucket with Object Lock the record may have
        been hidden so that later writes go unlocked: Corrupted, and nothing is written.

        Asked only when the record is missing: one request per process, none for a backup
        of a repository with its record. Without s3:GetBucketObjectLockConfiguration, which
        only buckets with Object Lock need, the bucket is taken for one without.
        """
        try:
            locked = self.bucket_has_object_lock()
        except ActionDenied as e:
            log.debug("no Object Lock record at %s, and the bucket may not be asked whether it "
                      "locks: %s", self.location(), e)
            return
        if locked:
            raise Corrupted(
                f"the Object Lock record {self._where(LOCK_RECORD)} is missing or hidden behind "
                f"a delete marker, and bucket {self.bucket} has Object Lock: nothing is written, "
                "lest it go unlocked; delete the delete marker (the record's earlier version "
                "remains), or put the record back with the repository's settings, e.g. "
                '{"mode": "governance", "duration_hours": 720, "extend": false}, or '
                '{"mode": "none"} for a repository made without retention')

    # --- the one door to boto3 ---------------------------------------------------------------

    def request(self, operation: str, key: str | None = None, up: int = 0, **params):
        """Send one S3 operation; count it and its retries; raise only core errors."""
        method = getattr(self.client, xform_name(operation))
        kind = _KIND.get(operation, "MULTIPART")
        try:
            response = method(Bucket=self.bucket, **params)
        except ElementTree.ParseError as e:  # botocore reads GetBucketLocation's XML itself
            self._count(kind, 1, up)
            raise StorageError(f"S3 {operation} on {self._where(key)}: {self.endpoint} answered "
                               f"with something that is not S3's XML ({e}): is it an S3 "
                               "endpoint?") from e
        except (ClientError, BotoCoreError) as e:
            meta = e.response.get("ResponseMetadata", {}) if isinstance(e, ClientError) else {}
            self._count(kind, 1 + meta.get("RetryAttempts", 0), up)
            if operation == "HeadObject" and error_code(e) in _BODILESS_REFUSALS:
                e = self._head_refusal_explained(key, params["Key"], e)
            raise translate(e, operation, self._where(key), self.bucket, self.endpoint) from e
        self._count(kind, 1 + response["ResponseMetadata"].get("RetryAttempts", 0), up)
        return response

    def _head_refusal_explained(self, key: str | None, name: str, refusal: ClientError):
        """A HEAD answer has no body, so a refused one says only "403" or "400", whether the
        secret was wrong, the key unknown, the token expired or the clock skewed. The same
        object asked for as a one-byte GET is refused with the code that says which."""
        try:
            self.request("GetObject", key, Key=name, Range="bytes=0-0")["Body"].close()
        except StorageError as e:
            if error_code(e.__cause__) not in {*_BODILESS_REFUSALS, "", "NoSuchKey",
                                               "InvalidRange"}:
                return e.__cause__
        return refusal

    def _count(self, kind: str, attempts: int, up: int = 0, down: int = 0) -> None:
        with self._count_lock:
            for _ in range(attempts):
                self.counts.count(kind, up=up)
            self.counts.bytes_down += down

    def _where(self, key: str | None) -> str:
        return self.location() + (key or "")

    def _object(self, key: str) -> str:
        return self.prefix + check_key(key)

    # --- writes ------------------------------------------------------------------------------

    def put(self, key: str, data: Bytes) -> None:
        self._write(key, memoryview(data), self._object_lock(), create_only=False)
        self._put_here.add(key)
        if key in KEY_BLOBS and self.bucket_versioning():
            self._delete_old_key_versions()

    def _delete_old_key_versions(self) -> None:
        """After a format blob is overwritten (update-passphrase), its old versions would
        still open the repository with the old passphrase: delete them, or say they remain.

        Only versions that are not the latest are deleted, never a current blob. Locked ones
        (Object Lock) cannot be; without s3:ListBucketVersions and s3:DeleteObjectVersion
        none can.
        """
        names = [self.prefix + key for key in KEY_BLOBS]
        try:
            if self._object_lock():
                raise PermissionDenied("the old versions are locked until their retention ends")
            params = {"Prefix": self.prefix + "format"}  # a prefix of both names
            while True:
                page = self.request("ListObjectVersions", None, **params)
                for version in page.get("Versions", []):
                    if version["Key"] in names and not version["IsLatest"]:
                        self.request("DeleteObject", version["Key"][len(self.prefix):],
                                     Key=version["Key"], VersionId=version["VersionId"])
                if not page.get("IsTruncated"):
                    return
                params["KeyMarker"] = page["NextKeyMarker"]
                params["VersionIdMarker"] = page["NextVersionIdMarker"]
        except StorageError as e:
            log.debug("old versions of %s not deleted: %s", names, e)
            if not self._told_of_old_key_versions:
                self._told_of_old_key_versions = True
                log.warning(
                    "bucket %s is versioned: old versions of %s remain and still open the "
                    "repository with the old passphrase; delete them (corso does, given "
                    "s3:ListBucketVersions and s3:DeleteObjectVersion; not under Object Lock) "
                    "or expire them with a lifecycle rule (NoncurrentVersionExpiration)",
                    self.bucket, " and ".join(f"s3://{self.bucket}/{n}" for n in names))

    def _create(self, key: str, data: Bytes) -> None:
        if self._may_be_new and "/" not in key:
            self._may_be_new = False
            self._claim(key)
        self._create_only(key, memoryview(data), self._object_lock())

    def _create_only(self, key: str, data: memoryview, lock: ObjectLock | None) -> None:
        if self.atomic_create:
            try:
                return self._write(key, data, lock, create_only=True)
            except StorageError as e:
                if error_code(e.__cause__) != "NotImplemented":
                    raise
                log.warning("%s ignores If-None-Match: creating blobs is not atomic there",
                            self.endpoint)
                self.atomic_create = False
        # A store without conditional writes: check, then write (a concurrent writer can win).
        try:
            self.stat(key)
        except NotFound:
            return self._write(key, data, lock, create_only=False)
        raise AlreadyExists(f"{self._where(key)}: already exists")

    def _write(self, key: str, data: memoryview, lock: ObjectLock | None,
               create_only: bool) -> None:
        extra = {"IfNoneMatch": "*"} if create_only else {}
        if lock:
            extra.update(lock.put_parameters())
        if len(data) <= self.multipart_threshold:
            self.request(
                "PutObject", key, up=len(data), Key=self._object(key), **upload_body(data),
                **extra,
            )
        else:
            self._multipart(key, data, extra)

    def _multipart(self, key: str, data: memoryview, extra: dict) -> None:
        """Upload in parts that are views of `data` (never copies); abort on any failure."""
        condition = {k: extra.pop(k) for k in ("IfNoneMatch",) if k in extra}
        upload = self.request(
            "CreateMultipartUpload", key, Key=self._object(key), ChecksumAlgorithm="CRC32",
            **extra,
        )["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                piece = data[start : start + self.part_size]
                answer = self.request(
                    "UploadPart", key, up=len(piece), Key=self._object(key), UploadId=upload,
                    PartNumber=number, ChecksumAlgorithm="CRC32", **upload_body(piece),
                )
                part = {"PartNumber": number, "ETag": answer["ETag"]}
                if answer.get("ChecksumCRC32"):
                    part["ChecksumCRC32"] = answer["ChecksumCRC32"]
                parts.append(part)
            self.request(
                "CompleteMultipartUpload", key, Key=self._object(key), UploadId=upload,
                MultipartUpload={"Parts": parts}, **condition,
            )
        except BaseException:
            self._abort(key, upload)
            raise

    def _abort(self, key: str, upload: str) -> None:
        try:
            self.request("AbortMultipartUpload", key, Key=self._object(key), UploadId=upload)
        except StorageError as e:
            log.warning("could not abort the upload of %s (cleanup will): %s", key, e)

    def _claim(self, key: str) -> None:
        """`repo init` is about to create its format blob `key`, which claims the location:
        check that the location is free, then create the Object Lock record, before any blob.

        The record is only ever created where none is (If-None-Match), so an init never
        replaces the record of another: of two inits at once with other settings, the later
        one stops here, having written nothing. With the same settings it finds its own
        record and goes on, and the format blob decides which of the two created the
        repository. An init interrupted between the two writes leaves the record and no
        repository: the same init goes on from it, one with other settings is told to
        delete it.
        """
        self._check_location_is_free(key)
        record = json.dumps(self._lock.as_dict() if self._lock else NO_LOCK).encode()
        try:
            self._create_only(LOCK_RECORD, memoryview(record), self._lock)
        except AlreadyExists:
            if self._get(LOCK_RECORD, None) != record:
                self._refuse_other_record(key)
        with self._settings_lock:
            self._lock_known = True

    def _refuse_other_record(self, key: str) -> None:
        """Another init's Object Lock record is in place. With its format blob `key`, the
        repository exists (AlreadyExists, as for any init that comes too late); without it,
        another init is creating it, or one was interrupted before its format blob."""
        try:
            self.stat(key)
        except NotFound:
            raise RepositoryError(
                f"another repo init is creating a repository at {self.location()} with other "
                "Object Lock settings, or was interrupted doing so: its record "
                f"{self._where(LOCK_RECORD)} is there, its format blob is not; nothing was "
                "written. If no other init is running, delete that record and run init again"
            ) from None
        raise AlreadyExists(f"{self._where(key)}: already exists")

    def _check_location_is_free(self, key: str) -> None:
        """Before init's first create-only put (its format blob, which claims the location):
        refuse a prefix inside or above another repository (one holding a blob of the same
        name), or one that holds objects that are not a corso repository. A repository at the
        prefix itself is AlreadyExists, before anything (an Object Lock record) is written.
        """
        try:
            self.stat(key)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"{self._where(key)}: already exists")
        parts = self.prefix.split("/")[:-1]
        for depth in range(len(parts)):
            outer = "".join(f"{p}/" for p in parts[:depth])
            try:
                self.request("HeadObject", key, Key=outer + key)
            except NotFound:
                continue
            raise UsageError(
                f"{self.location()} is inside the repository at s3://{self.bucket}/{outer}; "
                "repositories can share a bucket under different prefixes, but not nest"
            )
        listed = self.request("ListObjectsV2", None, Prefix=self.prefix, MaxKeys=1000)
        others = [item["Key"][len(self.prefix) :] for item in listed.get("Contents", [])]
        if key in others:  # a concurrent init won since the stat above
            raise AlreadyExists(f"{self._where(key)}: already exists")
        others = [k for k in others if k != LOCK_RECORD]
        inner = [k[: -len(key)] for k in others if k.endswith(f"/{key}")]
        if inner:
            raise UsageError(
                f"{self.location()} holds the repository at {self.location()}{inner[0]}; "
                "repositories can share a bucket under different prefixes, but not nest"
            )
        if others:
            raise UsageError(
                f"{self.location()} holds objects that are not a corso repository (such as "
                f"{others[0]}); choose an empty --prefix"
            )

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            self.stat(key)
            return b""
        if offset == 0 and length is None:
            return self._get(key, None)
        end = "" if length is None else str(offset + length - 1)
        return self._get(key, f"bytes={offset}-{end}")

    def get_tail(self, key: str, length: int) -> bytes:
        if length <= 0:
            self.stat(key)
            return b""
        return self._get(key, f"bytes=-{length}")

    def get_into(self, key: str, offset: int, buffer: memoryview) -> int:
        if not len(buffer):
            self.stat(key)
            return 0

        def fill(body, received: int, end: int) -> int:
            if received < offset or end > offset + len(buffer):
                raise StorageError(f"reading {self._where(key)}: the answer holds bytes "
                                   f"{received}-{end - 1}, not the range asked for")
            return receive_into(body, buffer[received - offset : end - offset])

        return self._receive(key, f"bytes={offset}-{offset + len(buffer) - 1}", fill)

    def _get(self, key: str, byte_range: str | None) -> bytes:
        """The bytes a GET of `byte_range` (None: all) answers."""
        parts: list[bytes] = []

        def keep(body, received: int, end: int) -> int:
            # Past the end, one more read that must find nothing: botocore checks the
            # length and the checksum there.
            parts.append(body.read(max(end - received, 1)))
            return len(parts[-1])

        self._receive(key, byte_range, keep)
        return b"".join(parts)

    def _receive(self, key: str, byte_range: str | None,
                 receive: Callable[[Any, int, int], int]) -> int:
        """How many bytes a GET of `byte_range` (None: all) answered, each read of its body
        done by `receive(body, object offset received to, object offset of the end)`.
        botocore retries a request that got no answer, not a body cut off half-way (a reset
        connection, a read timeout): the bytes not received yet are asked for again, up to
        RESUMES times, of the same version of the object (If-Match its ETag), so one dropped
        connection does not fail a 24 MiB read near its end."""
        response = self._get_object(key, byte_range)
        if response is None:
            return 0
        start, end = _span(response)
        body, received, resumes = response["Body"], start, 0
        while True:
            try:
                got = receive(body, received, end)
                if not got and received < end:
                    raise IncompleteReadError(actual_bytes=received - start,
                                              expected_bytes=end - start)
            except (BotoCoreError, OSError, HTTPException) as e:
                body.close()
                if isinstance(e, FlexibleChecksumError):
                    raise StorageError(f"reading {self._where(key)}: {e}") from e
                if received == end:  # every byte is in: a connection lost after them
                    break
                if resumes == RESUMES:
                    raise StorageError(f"reading {self._where(key)}: the connection broke "
                                       f"off {RESUMES + 1} times ({e})") from e
                resumes += 1
                body = self._rest(key, response, received, end)
                continue
            except BaseException:
                # Refused (get_into's check) or interrupted: the connection is closed, not
                # left in the pool with the rest of this body still to come.
                body.close()
                raise
            if not got:
                break
            if received + got > end:
                body.close()
                raise StorageError(f"reading {self._where(key)}: more bytes than the "
                                   "answer said")
            received += got
        release(body)
        self._count("GET", 0, down=received - start)
        return received - start

    def _rest(self, key: str, first: dict, start: int, end: int):
        """The body of bytes [start, end) of the object `first` answered from."""
        etag = first.get("ETag")
        rest = self._get_object(key, f"bytes={start}-{end - 1}",
                                **({"IfMatch": etag} if etag else {}))
        if rest is None or _span(rest) != (start, end):
            raise StorageError(f"reading {self._where(key)}: the object changed while it "
                               "was read")
        return rest["Body"]

    def _get_object(self, key: str, byte_range: str | None, **params) -> dict | None:
        if byte_range:
            params["Range"] = byte_range
        try:
            response = self.request("GetObject", key, Key=self._object(key), **params)
        except StorageError as e:
            # A range starting at or past the end (an empty blob's tail, too): no bytes.
            if error_code(e.__cause__) == "InvalidRange":
                return None
            raise
        self._may_be_new = False
        return response

    def stat(self, key: str) -> BlobInfo:
        response = self.request("HeadObject", key, Key=self._object(key))
        return BlobInfo(key, response["ContentLength"], response["LastModified"].timestamp())

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        params = {"Prefix": self.prefix + prefix}
        while True:
            page = self.request("ListObjectsV2", prefix, **params)
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if _follows_naming_scheme(key):
                    yield BlobInfo(key, item["Size"], item["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]

    # --- Object Lock retention (for maintenance) ----------------------------------------------

    def retained_until(self, key: str) -> float | None:
        if not self._object_lock():
            return None
        until = self.request("HeadObject", key, Key=self._object(key)).get(
            "ObjectLockRetainUntilDate")
        return until.timestamp() if until else None

    def extend_retention(self, key: str) -> bool:
        lock = self._object_lock()
        if not lock or not lock.extend:
            return False
        parameters = lock.put_parameters()
        self.request("PutObjectRetention", key, Key=self._object(key), Retention={
            "Mode": parameters["ObjectLockMode"],
            "RetainUntilDate": parameters["ObjectLockRetainUntilDate"]})
        return True

    # --- deletes and cleanup -----------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Only a bucket that keeps versions answers with a delete marker, so an unversioned
        one is never asked about its versioning. A record this command put (a backup's session
        record, deleted as the backup ends) frees nothing anyone counted on: not worth a
        question or a warning on every backup."""
        answer = self.request("DeleteObject", key, Key=self._object(key))
        if answer.get("DeleteMarker") and key not in self._put_here:
            self._tell_of_kept_versions()

    def cleanup(self, older_than_seconds: float) -> int:
        """Abort multipart uploads of the repository's blobs under the prefix initiated more
        than the given age ago (a repository at the bucket's root leaves others' alone).

        Ages are measured on the server's clock (its Date header), so another host's live
        upload is never cut because of local clock skew.
        """
        params = {"Prefix": self.prefix}
        aborted = 0
        while True:
            page = self.request("ListMultipartUploads", None, **params)
            now = _server_time(page)
            for upload in page.get("Uploads", []):
                key = upload["Key"][len(self.prefix) :]
                # Whole seconds on both sides: the Date header has no fractions.
                age = now - int(upload["Initiated"].timestamp())
                if is_blob_key(key) and age >= older_than_seconds:
                    self.request(
                        "AbortMultipartUpload", key, Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            params["KeyMarker"] = page.get("NextKeyMarker") or page["Uploads"][-1]["Key"]
            params["UploadIdMarker"] = (
                page.get("NextUploadIdMarker") or page["Uploads"][-1]["UploadId"]
            )

    def close(self) -> None:
        self.client.close()


def _follows_naming_scheme(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def _server_time(response: dict) -> float:
    date = response["ResponseMetadata"]["HTTPHeaders"].get("date")
    if not date:
        raise StorageError("the S3 server sent no Date header; cannot age uploads safely")
    return parsedate_to_datetime(date).timestamp()


def _span(response: dict) -> tuple[int, int]:
    """The object bytes [start, end) a GetObject response holds."""
    answered = response.get("ContentRange")  # "bytes 100-199/1000" for a range
    if answered:
        first, last = answered.split()[1].split("/")[0].split("-")
        return int(first), int(last) + 1
    return 0, response["ContentLength"]
