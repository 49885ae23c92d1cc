import os

import pytest

from corso_core.errors import Corrupted
from corso_core.repo.chunker import Chunker
from corso_core.repo.crypto import OVERHEAD, Keys, seal, unseal
from corso_core.repo.repository import Repository


def test_seal_round_trips_and_uses_a_fresh_nonce():
    key = os.urandom(32)
    a, b = seal(key, b"secret", b"ad"), seal(key, b"secret", b"ad")
    assert a != b and len(a) == len(b"secret") + OVERHEAD
    assert unseal(key, a, b"ad", "x") == b"secret"


def test_wrong_associated_data_or_flipped_bit_is_corrupted():
    key = os.urandom(32)
    blob = bytearray(seal(key, b"secret", b"chunk-1"))
    with pytest.raises(Corrupted, match="x is corrupted"):
        unseal(key, bytes(blob), b"chunk-2", "x")
    blob[-1] ^= 1
    with pytest.raises(Corrupted):
        unseal(key, bytes(blob), b"chunk-1", "x")
    with pytest.raises(Corrupted, match="too short"):
        unseal(key, b"short", b"chunk-1", "x")


def test_subkeys_differ_by_purpose_and_are_deterministic():
    master = os.urandom(32)
    keys = Keys.derive(master)
    assert len({keys.chunk_id, keys.data, keys.metadata}) == 3
    assert Keys.derive(master) == keys
    assert Keys.derive(os.urandom(32)) != keys


def test_no_subkey_shows_in_the_keys_repr_nor_in_a_repository_s():
    """A repr lands in tracebacks, debug logs and test failures: it holds no key material."""
    keys = Keys.derive(os.urandom(32))
    shown = repr(keys) + repr(Repository(None, keys, "id", 2, Chunker(None, keys.chunker_seed)))
    for secret in (keys.chunk_id, keys.data, keys.metadata):
        assert repr(secret)[2:-1] not in shown and secret.hex() not in shown
    assert str(keys.chunker_seed) not in shown and hex(keys.chunker_seed) not in shown
