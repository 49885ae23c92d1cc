import os
import threading

import pytest

from corso_core.errors import Corrupted
from corso_core.repo import crypto
from corso_core.repo.chunker import Chunker
from corso_core.repo.crypto import NONCE_SIZE, NONCES_PER_DRAW, OVERHEAD, Keys, seal, unseal
from corso_core.repo.repository import Repository


def test_seal_round_trips_and_uses_a_fresh_nonce():
    key = os.urandom(32)
    a, b = seal(key, b"secret", b"ad"), seal(key, b"secret", b"ad")
    assert a != b and len(a) == len(b"secret") + OVERHEAD
    assert unseal(key, a, b"ad", "x") == b"secret"


def test_nonces_never_repeat_across_draws_and_threads():
    """Nonces are drawn from os.urandom many at a time (crypto._Nonces): past the end of one
    draw, and in other threads, every nonce is still a new one, and each is the one sealed."""
    per_thread = 3 * NONCES_PER_DRAW + 5  # past several draws
    found: list[list[bytes]] = [[] for _ in range(3)]

    def take(into: list[bytes]) -> None:
        into.extend(crypto.new_nonce() for _ in range(per_thread))

    threads = [threading.Thread(target=take, args=(into,)) for into in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [nonce for into in found for nonce in into]
    assert len(every) == 3 * per_thread == len(set(every))
    assert {len(nonce) for nonce in every} == {NONCE_SIZE}
    key = os.urandom(32)
    sealed = [seal(key, b"x", b"ad")[:NONCE_SIZE] for _ in range(NONCES_PER_DRAW + 2)]
    assert len(set(sealed)) == len(sealed)


def test_a_forked_child_draws_nonces_of_its_own():
    crypto.new_nonce()  # the parent holds a draw it has not used up
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next nonces, to the parent
        os.close(reader)
        os.write(writer, b"".join(crypto.new_nonce() for _ in range(4)))
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = b"".join(crypto.new_nonce() for _ in range(4))
    assert len(child) == 4 * NONCE_SIZE and child != parent


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
