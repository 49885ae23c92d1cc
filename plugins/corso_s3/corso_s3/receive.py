"""Response bodies received into the caller's buffer, without a copy where botocore allows it.

A restore receives each range (up to 24 MiB) into a buffer it re-uses. botocore's
`StreamingBody.readinto` goes through urllib3's, which reads into new bytes and copies them
over; that costs the copy, and the new bytes' memory and page faults, the re-used buffer was
there to save. Under a plain botocore body is urllib3's response and under that the standard
library's `http.client.HTTPResponse`, whose `readinto` receives from the socket into the
buffer and stops at the response's length, as urllib3 does when it reads. That is read
directly where it is there; any other body (one botocore wraps to check a checksum at its
end, one a test substitutes) is read with `read` and copied.
"""

from __future__ import annotations

import http.client

from botocore.response import StreamingBody


def _socket_response(body) -> http.client.HTTPResponse | None:
    """The http.client response a plain botocore body reads from, or None."""
    if type(body) is not StreamingBody:  # a subclass may check what it reads
        return None
    response = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    return response if isinstance(response, http.client.HTTPResponse) else None


def receive_into(body, view: memoryview) -> int:
    """Receive the next bytes of `body` into `view`; how many the body gave (0: it ended).
    An empty view reads on to the body's end, which must come: botocore checks a body's
    length and checksum there. A body that gives more than `view` holds (a server sending
    more than it said) fills it, and the count says how many more there were."""
    response = _socket_response(body)
    if response is None:
        data = body.read(max(len(view), 1))
        view[: len(data)] = data[: len(view)]
        return len(data)
    return response.readinto(view) if len(view) else 0


def release(body) -> None:
    """Give a body's connection back to urllib3's pool once its response has been read to
    the end: urllib3 does that itself only at the end of a read of its own."""
    response = _socket_response(body)
    if response is not None and response.isclosed():
        body._raw_stream.release_conn()
