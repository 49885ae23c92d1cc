import os

import pytest

from corso_core.errors import Corrupted
from corso_core.repo.crypto import OVERHEAD, Keys, seal, unseal


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
