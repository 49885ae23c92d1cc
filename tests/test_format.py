"""The format blob and the repository lifecycle below the CLI: keys, damage, versions, bounds."""

import hashlib
import json
import os
import threading
import time

import pytest
from unkeyed_repository import PASSPHRASE, put_unkeyed_repository

from corso_core.errors import (
    AlreadyExists,
    Corrupted,
    InvalidPassphrase,
    PermissionDenied,
    RepositoryError,
    UnsupportedFormat,
)
from corso_core.repo import format as format_module
from corso_core.repo.chunker import KEYED_SEED
from corso_core.repo.crypto import Keys
from corso_core.repo.format import (
    FORMAT_COPY_KEY,
    FORMAT_KEY,
    FORMAT_VERSION,
    MAGIC,
    TEST_CHEAP_KDF_ENV,
    FormatBlob,
)
from corso_core.repo.repository import (
    init_or_open,
    init_repository,
    open_repository,
    update_passphrase,
)
from corso_core.storage.filesystem import FilesystemStorage


@pytest.fixture
def storage(tmp_path):
    return FilesystemStorage(str(tmp_path / "repo"))


def rewrite_body(storage, edit) -> None:
    """Edit the format blob's JSON body and fix up its checksum, as a forger would."""
    body = json.loads(storage.get(FORMAT_KEY).split(b"\n", 2)[2])
    edit(body)
    raw = json.dumps(body).encode()
    storage.put(FORMAT_KEY, MAGIC + b"sha256:" + hashlib.sha256(raw).hexdigest().encode()
                + b"\n" + raw)


def test_open_gives_the_same_keys_and_settings_as_init(storage):
    created = init_repository(storage, "pw")
    opened = open_repository(storage, "pw")
    assert opened.keys == created.keys
    assert (opened.repository_id, opened.format_version, opened.chunker) == (
        created.repository_id, FORMAT_VERSION, created.chunker)
    assert storage.get(FORMAT_KEY) == storage.get(FORMAT_COPY_KEY)


def test_two_repositories_have_different_ids_and_keys(tmp_path):
    one = init_repository(FilesystemStorage(str(tmp_path / "a")), "pw")
    two = init_repository(FilesystemStorage(str(tmp_path / "b")), "pw")
    assert one.repository_id != two.repository_id and one.keys != two.keys


def test_format_blob_is_plaintext_with_the_documented_fields(storage):
    created = init_repository(storage, "correct horse battery staple")
    raw = storage.get(FORMAT_KEY)
    fields = json.loads(raw.split(b"\n", 2)[2])
    assert fields["aead"] == "AES-256-GCM" and fields["kdf"]["name"] == "scrypt"
    assert fields["repository_id"] == created.repository_id
    assert fields["chunker"] == created.chunker.params.as_dict()
    assert b"correct horse" not in raw and created.master_key not in raw


def test_a_new_repository_records_a_keyed_chunker_and_never_its_seed(storage):
    created = init_repository(storage, "pw")
    raw = storage.get(FORMAT_KEY)
    fields = json.loads(raw.split(b"\n", 2)[2])
    # version 2: a corso that reads only version 1 refuses it as newer, not as damaged
    assert fields["chunker"]["seed"] == KEYED_SEED and fields["format_version"] == 2
    seed = Keys.derive(created.master_key).chunker_seed
    assert created.chunker.seed == seed != 0
    assert open_repository(storage, "pw").chunker == created.chunker
    assert str(seed).encode() not in raw and f"{seed:x}".encode() not in raw.lower()


def test_a_repository_made_before_keyed_chunking_keeps_seed_0(storage):
    """Its format blob (as that corso wrote it) has no chunker seed: it opens, cuts with seed 0
    (see test_engine_keyed_chunks), and a new passphrase does not make it keyed."""
    put_unkeyed_repository(storage)
    opened = open_repository(storage, PASSPHRASE)
    assert opened.chunker.seed == 0 and opened.chunker.params.seed is None
    assert opened.format_version == 1
    update_passphrase(opened, "new")
    fields = json.loads(storage.get(FORMAT_KEY).split(b"\n", 2)[2])
    assert "seed" not in fields["chunker"] and fields["format_version"] == 1
    assert open_repository(storage, "new").chunker == opened.chunker


def test_without_the_test_setting_the_kdf_has_full_strength(storage, monkeypatch):
    monkeypatch.delenv(TEST_CHEAP_KDF_ENV)
    init_repository(storage, "pw")
    kdf = FormatBlob.decode(storage.get(FORMAT_KEY), FORMAT_KEY).kdf
    assert (kdf.n, kdf.r, kdf.p) == (2**15, 8, 2)  # 32 MiB, as restic's N=2^15, r=8
    assert not kdf.test_strength


def test_a_repository_keeps_the_kdf_parameters_it_was_made_with(storage, monkeypatch):
    """A repository made with the earlier default (N=2^16, r=8, p=1: 64 MiB) still opens, with
    the parameters its format blob records, and is not taken for a test-only one."""
    monkeypatch.delenv(TEST_CHEAP_KDF_ENV)
    current = format_module.FULL_STRENGTH
    monkeypatch.setattr(format_module, "FULL_STRENGTH", {"n": 2**16, "r": 8, "p": 1})
    created = init_repository(storage, "pw")
    monkeypatch.setattr(format_module, "FULL_STRENGTH", current)
    opened = open_repository(storage, "pw")
    assert (opened.format.kdf.n, opened.format.kdf.r, opened.format.kdf.p) == (2**16, 8, 1)
    assert opened.keys == created.keys and not opened.format.kdf.test_strength


def test_the_test_setting_is_what_makes_tests_cheap(storage):
    init_repository(storage, "pw")
    assert FormatBlob.decode(storage.get(FORMAT_KEY), FORMAT_KEY).kdf.n == 2**10


def test_wrong_passphrase_is_invalid_passphrase(storage):
    init_repository(storage, "right")
    with pytest.raises(InvalidPassphrase, match="^invalid passphrase$"):
        open_repository(storage, "wrong")


class BothFormatReadsAtOnce(FilesystemStorage):
    """Reading `format` waits until `format-copy` is being read too (at most 10 s)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.copy_asked = threading.Event()

    def get(self, key, offset=0, length=None):
        if key == FORMAT_COPY_KEY:
            self.copy_asked.set()
        elif key == FORMAT_KEY and not self.copy_asked.wait(10):
            raise AssertionError("format-copy was not read while format was")
        return super().get(key, offset, length)


def test_open_reads_the_format_blob_and_its_copy_at_once(tmp_path):
    created = init_repository(FilesystemStorage(str(tmp_path / "repo")), "pw")
    opened = open_repository(BothFormatReadsAtOnce(str(tmp_path / "repo")), "pw")
    assert opened.keys == created.keys


@pytest.mark.parametrize("where", ["magic", "checksum", "body", "truncated"])
def test_damage_is_corrupted_naming_the_blob_not_a_wrong_passphrase(storage, where):
    init_repository(storage, "pw")
    blob = bytearray(storage.get(FORMAT_KEY))
    if where == "truncated":
        blob = blob[: len(blob) // 2]
    else:
        position = {"magic": 3, "checksum": len(MAGIC) + 10, "body": len(blob) - 20}[where]
        blob[position] ^= 0x01
    storage.put(FORMAT_KEY, bytes(blob))
    with pytest.raises(Corrupted, match=f"format blob {FORMAT_KEY} is corrupted.*"
                                        f"{FORMAT_COPY_KEY} is intact"):
        open_repository(storage, "pw")


def test_both_copies_damaged_is_corrupted_without_pointing_at_the_copy(storage):
    init_repository(storage, "pw")
    for key in (FORMAT_KEY, FORMAT_COPY_KEY):
        storage.put(key, storage.get(key)[:-5])
    with pytest.raises(Corrupted) as raised:
        open_repository(storage, "pw")
    assert "corrupted" in str(raised.value) and "intact" not in str(raised.value)


def test_a_missing_primary_with_an_intact_copy_says_so(storage):
    init_repository(storage, "pw")
    storage.delete(FORMAT_KEY)
    with pytest.raises(Corrupted, match=f"{FORMAT_KEY} is missing.*{FORMAT_COPY_KEY} is intact"):
        open_repository(storage, "pw")


def test_recovery_from_the_copy_as_the_readme_says(storage):
    created = init_repository(storage, "pw")
    storage.put(FORMAT_KEY, b"garbage")
    storage.put(FORMAT_KEY, storage.get(FORMAT_COPY_KEY))  # README: copy format-copy over format
    assert open_repository(storage, "pw").keys == created.keys


def test_a_forged_header_with_a_fixed_checksum_does_not_unwrap(storage):
    init_repository(storage, "pw")
    rewrite_body(storage, lambda body: body["chunker"].update(avg_size=4096))
    with pytest.raises(InvalidPassphrase):
        open_repository(storage, "pw")


def test_a_chunker_seed_this_corso_does_not_know_is_refused(storage):
    init_repository(storage, "pw")
    rewrite_body(storage, lambda body: body["chunker"].update(seed="keyed-v9"))
    with pytest.raises(UnsupportedFormat, match="chunker seed 'keyed-v9'; this corso knows "
                                                f"'{KEYED_SEED}'"):
        open_repository(storage, "pw")


@pytest.mark.parametrize("edit", [lambda body: body.update(features=["x"]),
                                  lambda body: body["kdf"].update(pepper="x")])
def test_a_field_the_wrapping_does_not_authenticate_is_refused(storage, edit):
    """Only the known fields are bound to the wrapped key: one added (its checksum fixed up)
    opened as if it were not there, unauthenticated (found writing a reader from the docs)."""
    init_repository(storage, "pw")
    rewrite_body(storage, edit)
    with pytest.raises(Corrupted, match=f"format blob {FORMAT_KEY} is corrupted: unknown field"):
        open_repository(storage, "pw")


def test_newer_format_version_names_both_versions(storage):
    init_repository(storage, "pw")
    rewrite_body(storage, lambda body: body.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(UnsupportedFormat, match=f"version {FORMAT_VERSION + 1}.*"
                                                f"reads version {FORMAT_VERSION}"):
        open_repository(storage, "pw")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n", 2**40, "n=1099511627776 is outside"),
        ("n", 3 * 2**12, "not a power of two"),
        ("r", 10**9, "r=1000000000 is outside"),
        ("p", 0, "p=0 is outside"),
        ("name", "argon2id", '"argon2id"'),
    ],
)
def test_kdf_parameters_are_bounds_checked_before_use(storage, field, value, message):
    init_repository(storage, "pw")
    rewrite_body(storage, lambda body: body["kdf"].update({field: value}))
    started = time.monotonic()
    with pytest.raises(UnsupportedFormat, match=message):
        open_repository(storage, "pw")
    assert time.monotonic() - started < 1  # scrypt never ran with the absurd parameters


def test_memory_bound_rejects_n_and_r_that_are_each_in_range(storage):
    init_repository(storage, "pw")
    rewrite_body(storage, lambda body: body["kdf"].update(n=2**20, r=16))
    with pytest.raises(UnsupportedFormat, match="more than 1 GiB"):
        open_repository(storage, "pw")


def test_init_never_overwrites_an_existing_repository(storage):
    first = init_repository(storage, "pw")
    before = storage.get(FORMAT_KEY)
    with pytest.raises(AlreadyExists, match=storage.location()):
        init_repository(storage, "other")
    assert storage.get(FORMAT_KEY) == before
    assert open_repository(storage, "pw").repository_id == first.repository_id


def test_init_where_only_the_copy_survives_never_replaces_it(storage):
    created = init_repository(storage, "pw")
    storage.delete(FORMAT_KEY)
    copy = storage.get(FORMAT_COPY_KEY)
    with pytest.raises(AlreadyExists):
        init_repository(storage, "pw")
    assert storage.get(FORMAT_COPY_KEY) == copy
    assert [b.key for b in storage.list()] == [FORMAT_COPY_KEY]
    storage.put(FORMAT_KEY, copy)  # the README's recovery step
    assert open_repository(storage, "pw").keys == created.keys


def test_init_again_restores_a_missing_copy_and_never_touches_the_primary(storage):
    init_repository(storage, "pw")
    primary = storage.get(FORMAT_KEY)
    storage.delete(FORMAT_COPY_KEY)  # as if init was killed between its two writes
    repository, created = init_or_open(storage, "pw")
    assert not created
    assert storage.get(FORMAT_COPY_KEY) == primary == storage.get(FORMAT_KEY)


def test_init_or_open_with_another_passphrase_changes_nothing(storage):
    init_repository(storage, "pw")
    storage.delete(FORMAT_COPY_KEY)
    with pytest.raises(RepositoryError, match=f"already exists at {storage.location()}"):
        init_or_open(storage, "other")
    assert [b.key for b in storage.list()] == [FORMAT_KEY]


def test_update_passphrase_keeps_the_master_key_and_drops_the_old_passphrase(storage):
    created = init_repository(storage, "old")
    update_passphrase(open_repository(storage, "old"), "new")
    with pytest.raises(InvalidPassphrase):
        open_repository(storage, "old")
    reopened = open_repository(storage, "new")
    assert reopened.keys == created.keys and reopened.repository_id == created.repository_id
    assert storage.get(FORMAT_KEY) == storage.get(FORMAT_COPY_KEY)
    old_salt = created.format.kdf.salt
    assert reopened.format.kdf.salt != old_salt


class CrashBeforePrimary(Exception):
    """Stands for the process dying between update-passphrase's two writes."""


class CrashingBeforeThePrimaryWrite(FilesystemStorage):
    def put(self, key, data):
        if key == FORMAT_KEY:
            raise CrashBeforePrimary
        super().put(key, data)


def interrupted_update(tmp_path, old: str, new: str) -> FilesystemStorage:
    """A repository whose update-passphrase from `old` to `new` died between its two writes."""
    init_repository(FilesystemStorage(str(tmp_path / "repo")), old)
    time.sleep(0.05)  # the change comes later than init on the storage's clock, as in life
    crashing = CrashingBeforeThePrimaryWrite(str(tmp_path / "repo"))
    with pytest.raises(CrashBeforePrimary):
        update_passphrase(open_repository(crashing, old), new)
    storage = FilesystemStorage(str(tmp_path / "repo"))
    assert storage.get(FORMAT_KEY) != storage.get(FORMAT_COPY_KEY)
    return storage


@pytest.mark.parametrize("opener, refused", [("new", "old"), ("old", "new")],
                         ids=["the-new-passphrase-finishes-it", "the-old-one-takes-it-back"])
def test_an_interrupted_update_is_settled_by_the_next_open(tmp_path, opener, refused):
    storage = interrupted_update(tmp_path, "old", "new")
    keys = open_repository(storage, opener).keys
    assert storage.get(FORMAT_KEY) == storage.get(FORMAT_COPY_KEY)
    with pytest.raises(InvalidPassphrase):
        open_repository(storage, refused)
    assert open_repository(storage, opener).keys == keys


class UpdateFinishingMeanwhile(FilesystemStorage):
    """Another computer's update-passphrase, its copy already written, writes its primary
    just before this open's `when`-th write of format-copy (or read of format); never if
    `when` is None."""

    def __init__(self, root: str, new_blob: bytes, when: tuple[str, int]) -> None:
        super().__init__(root)
        self.new_blob, self.when, self.seen = new_blob, when, {"put": 0, "get": 0}

    def _maybe_finish(self, operation: str, key: str) -> None:
        target = FORMAT_COPY_KEY if operation == "put" else FORMAT_KEY
        if key == target and self.new_blob:
            self.seen[operation] += 1
            if (operation, self.seen[operation]) == self.when:
                blob, self.new_blob = self.new_blob, b""
                super().put(FORMAT_KEY, blob)

    def put(self, key, data):
        self._maybe_finish("put", key)
        super().put(key, data)

    def get(self, key, offset=0, length=None):
        self._maybe_finish("get", key)
        return super().get(key, offset, length)


@pytest.mark.parametrize("when", [("put", 1), ("get", 2), None],
                         ids=["before-the-copy-is-rolled-back",
                              "before-the-primary-is-read-again", "after-the-open"])
def test_an_update_finishing_meanwhile_elsewhere_is_not_undone_by_the_old_passphrase(
        tmp_path, when):
    """An open with the old passphrase while another computer's update-passphrase is between
    its two writes: rolling the copy back after the update's primary landed left a copy
    newer than the new primary, and the next open with the old passphrase took the finished
    update back (the new passphrase refused)."""
    storage = interrupted_update(tmp_path, "old", "new")  # the update's first write
    racing = UpdateFinishingMeanwhile(storage.root, storage.get(FORMAT_COPY_KEY), when)
    open_repository(racing, "old")
    if when is None:
        storage.put(FORMAT_KEY, racing.new_blob)
    else:
        assert not racing.new_blob  # the update's second write happened during the open
    with pytest.raises(InvalidPassphrase):
        open_repository(storage, "old")
    assert open_repository(storage, "new").master_key
    assert storage.get(FORMAT_KEY) == storage.get(FORMAT_COPY_KEY)


def test_an_interrupted_update_and_a_wrong_passphrase_change_nothing(tmp_path):
    storage = interrupted_update(tmp_path, "old", "new")
    before = {key: storage.get(key) for key in (FORMAT_KEY, FORMAT_COPY_KEY)}
    with pytest.raises(InvalidPassphrase):
        open_repository(storage, "wrong")
    assert {key: storage.get(key) for key in before} == before


def test_a_copy_older_than_the_primary_never_brings_its_passphrase_back(storage):
    """A copy holding a replaced passphrase (its write overtaken by the primary's) is not
    "an unfinished change": only a copy newer than the primary is."""
    init_repository(storage, "old")
    stale_copy = storage.get(FORMAT_COPY_KEY)
    update_passphrase(open_repository(storage, "old"), "new")
    storage.put(FORMAT_COPY_KEY, stale_copy)
    os.utime(storage._path(FORMAT_COPY_KEY), (1_700_000_000, 1_700_000_000))
    with pytest.raises(InvalidPassphrase):
        open_repository(storage, "old")
    open_repository(storage, "new")
    assert storage.get(FORMAT_COPY_KEY) == storage.get(FORMAT_KEY)


class ReadOnlyStorage(FilesystemStorage):
    def put(self, key, data):
        raise PermissionDenied(f"{key}: permission denied")


def test_read_only_access_opens_an_interrupted_update_without_repairing_it(tmp_path):
    storage = interrupted_update(tmp_path, "old", "new")
    before = {key: storage.get(key) for key in (FORMAT_KEY, FORMAT_COPY_KEY)}
    read_only = ReadOnlyStorage(storage.root)
    for passphrase in ("old", "new"):
        assert open_repository(read_only, passphrase).master_key
    assert {key: storage.get(key) for key in before} == before


def test_a_damaged_copy_is_repaired_by_the_next_open(storage):
    init_repository(storage, "pw")
    storage.put(FORMAT_COPY_KEY, b"damaged")
    open_repository(storage, "pw")
    assert storage.get(FORMAT_COPY_KEY) == storage.get(FORMAT_KEY)


def test_keys_come_from_the_master_key(storage):
    created = init_repository(storage, "pw")
    assert created.keys == Keys.derive(created.master_key)


def test_a_reader_written_from_docs_format_md_unwraps_the_master_key(storage):
    """The recipe in docs/format.md, with `cryptography` alone and no corso code: the master
    key, and the chunker's seed derived from it."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    created = init_repository(storage, "pass phrase")
    marker, checksum, body = storage.get(FORMAT_KEY).split(b"\n", 2)
    assert marker == b"corso repository format"
    assert checksum == b"sha256:" + hashlib.sha256(body).hexdigest().encode()
    fields = json.loads(body)
    kdf = fields["kdf"]
    key = Scrypt(salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"],
                 p=kdf["p"]).derive(b"pass phrase")
    wrapped = base64.b64decode(fields.pop("wrapped_master_key"))
    associated = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    master = AESGCM(key).decrypt(wrapped[:12], wrapped[12:], associated)
    assert master == created.master_key
    assert fields["chunker"]["seed"] == "keyed-v1"
    seed_bytes = HKDF(algorithm=hashes.SHA256(), length=8, salt=None,
                      info=b"corso v1 chunker-seed").derive(master)
    assert created.chunker.seed == int.from_bytes(seed_bytes, "little") % 2**63
