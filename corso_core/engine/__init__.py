"""The backup engine: sources' trees in, chunks and manifests out (backup), and back (restore).

Trees are walked recursively, a few Python frames per directory level, and a path may be up
to PATH_MAX (4096 bytes) long: about 2,000 levels of one-letter names. Python's default limit
of 1,000 frames would turn such a tree into a crash, so the engine raises it.
"""

import sys

sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
