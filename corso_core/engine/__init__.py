"""The backup engine: sources' trees in, chunks and manifests out (backup), and back (restore)."""
