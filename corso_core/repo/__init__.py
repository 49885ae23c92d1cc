"""The repository: encrypted blobs on a BlobStorage, knowing nothing of files."""
