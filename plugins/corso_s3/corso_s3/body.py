"""Request bodies: the caller's buffer, sent without a copy, with its CRC32 computed here.

A multipart upload sends slices of one large blob; wrapping each slice in a reader whose
position 0 is the slice's start keeps the blob in memory once, and makes botocore's retry
(which seeks to 0, not to where the body started) resend exactly the slice. What the sender
reads (urllib3: 16 KiB at a time) are views of that buffer, not copies.

Every upload carries its body's CRC32 (x-amz-checksum-crc32), for the server to check: a body
changed on the way is refused. Given one, botocore computes none, which took a second pass
over the body, copied out 1 MiB at a time, through zlib's CRC32 (~1.9 GiB/s here); zlib-ng's
runs at ~23 GiB/s over the buffer itself. Uploading 16 MiB objects to SeaweedFS took 0.67 ms of
client CPU per MiB against 1.12 (medians of 5 rounds of 16): ~0.27 CPU-s of a 1 GiB first
backup.
"""

from __future__ import annotations

import base64
import io

from zlib_ng import zlib_ng


def upload_body(view: memoryview) -> dict:
    """The parameters of a PutObject or UploadPart that sends `view`: body and checksum."""
    return {"Body": BufferReader(view), "ChecksumCRC32": crc32_checksum(view)}


def crc32_checksum(view: memoryview) -> str:
    """The CRC32 of `view` as S3 writes it: base64 of its four bytes, most significant first."""
    return base64.b64encode(zlib_ng.crc32(view).to_bytes(4, "big")).decode("ascii")


class BufferReader(io.RawIOBase):
    """A read-only, seekable file over a memoryview, without copying it."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        memoryview(buffer).cast("B")[:n] = chunk
        self._pos += n
        return n

    def read(self, size: int = -1) -> memoryview:
        """Up to `size` bytes, as a view of the buffer (valid while the buffer is): a body's
        bytes are only sent, and a socket sends from a view as well as from bytes."""
        end = len(self._view) if size is None or size < 0 else self._pos + size
        chunk = self._view[self._pos : end]
        self._pos += len(chunk)
        return chunk
