"""A repository as corso made it before keyed chunking: its format blob, byte for byte as that
corso (commit a3e2934, CORSO_TEST_CHEAP_KDF=1, CORSO_TEST_CHUNK_SIZE=4096) wrote it. Its
`chunker` has no `seed`, so it cuts with seed 0, as the chunks it already holds were cut."""

from corso_core.repo.format import FORMAT_COPY_KEY, FORMAT_KEY

PASSPHRASE = "made before keyed chunking"
FORMAT_BLOB = b"""\
corso repository format
sha256:91e493ec3543a8686405b3e1521ef2c60fecaca90f837c412db37bb8bcd19f31
{
  "aead": "AES-256-GCM",
  "chunker": {
    "algorithm": "fastcdc-2020",
    "avg_size": 4096,
    "max_size": 16384,
    "min_size": 1024
  },
  "format_version": 1,
  "kdf": {
    "n": 1024,
    "name": "scrypt",
    "p": 1,
    "r": 8,
    "salt": "KgqnqITGN8FunOaGWHilj6F0ASDYyqWouYFC2f7bhoE="
  },
  "repository_id": "17595ec5-3034-4c5e-9448-f1cb5d9a20d7",
  "wrapped_master_key": "kwOhxnKFS67ooybGXIn+xM783c8NdyFPkW6jP8tE/amgIv31s+nIpiDm9c83Pe7r3KvfgL9bqDCL4nVx"
}
"""  # noqa: E501 (the blob as written)


def put_unkeyed_repository(storage) -> None:
    """Make `storage` hold that repository, as its `repo init` left it."""
    for key in (FORMAT_KEY, FORMAT_COPY_KEY):
        storage.put_new(key, FORMAT_BLOB)
