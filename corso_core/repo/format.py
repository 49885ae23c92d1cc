"""The format blob: the one plaintext blob, which says how to read every other.

It holds the format version, the repository ID, the KDF and its parameters, the AEAD name, the
chunker parameters and the master key wrapped by a key derived from the passphrase. Layout:

    corso repository format\\n        (magic line)
    sha256:<hex of BODY>\\n           (plain checksum: tells damage from a wrong passphrase)
    BODY                             (JSON, sorted keys, readable)

Every header field is bound to the wrapped key as associated data, so a header edited by hand
(with its checksum fixed up) does not unwrap. The blob is stored twice (`FORMAT_KEY` and
`FORMAT_COPY_KEY`); losing both loses the repository, so the README explains recovery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from corso_core.errors import Corrupted, InvalidPassphrase, UnsupportedFormat
from corso_core.repo.chunker import KEYED_SEED, ChunkerParams
from corso_core.repo.crypto import AEAD_NAME, KEY_SIZE, seal, unseal

FORMAT_KEY = "format"
FORMAT_COPY_KEY = "format-copy"
#: 2: the chunker may be keyed (chunker.seed), which a corso reading only version 1 would take
#: for damage; it refuses version 2 as newer instead. Version 1 blobs (no seed) are read as ever.
FORMAT_VERSION = 2
MAGIC = b"corso repository format\n"
CHECKSUM_PREFIX = b"sha256:"

#: Test-only: set to 1 to derive keys with scrypt N=2^10 instead of 2^15, so tests run fast.
#: A repository made with it says so in its format blob (kdf.n); never set it for real backups.
TEST_CHEAP_KDF_ENV = "CORSO_TEST_CHEAP_KDF"

#: What new passphrases get. scrypt needs 128·n·r bytes (32 MiB here, as restic's N=2^15, r=8)
#: and does n·r·p units of work: the same work as the earlier 2^16, r=8, p=1 (~0.2 s) in half
#: its memory, as OpenSSL runs the p lanes one after another in one buffer. A repository keeps
#: the parameters its format blob records; a new passphrase gets these.
FULL_STRENGTH = {"n": 2**15, "r": 8, "p": 2}
TEST_STRENGTH = {"n": 2**10, "r": 8, "p": 1}
#: Bounds checked before scrypt runs, so a flipped bit cannot ask for terabytes or hours.
MAX_KDF_MEMORY = 1024**3  # scrypt needs 128 * n * r bytes
BOUNDS = {"n": (2**10, 2**20), "r": (1, 32), "p": (1, 16), "salt": (16, 64)}


@dataclass(frozen=True)
class Kdf:
    """scrypt and its parameters; `salt` is random per passphrase."""

    n: int
    r: int
    p: int
    salt: bytes
    name: str = "scrypt"

    @classmethod
    def for_new_passphrase(cls) -> Kdf:
        cheap = os.environ.get(TEST_CHEAP_KDF_ENV) == "1"
        return cls(**(TEST_STRENGTH if cheap else FULL_STRENGTH), salt=secrets.token_bytes(32))

    @property
    def work(self) -> int:
        """scrypt's CPU cost in units of one 128·r-byte block mix, up to a constant: n·r·p."""
        return self.n * self.r * self.p

    @property
    def test_strength(self) -> bool:
        """Cheaper than any parameters corso gives a real passphrase (CORSO_TEST_CHEAP_KDF)."""
        return self.work < FULL_STRENGTH["n"] * FULL_STRENGTH["r"] * FULL_STRENGTH["p"]

    def check_bounds(self, blob: str) -> None:
        def bad(what: str) -> UnsupportedFormat:
            return UnsupportedFormat(f"{blob} asks for an unsupported key derivation: {what}")

        if self.name != "scrypt":
            raise bad(f'"{self.name}" (this corso knows scrypt)')
        for field_name in ("n", "r", "p"):
            value, (low, high) = getattr(self, field_name), BOUNDS[field_name]
            if not isinstance(value, int) or not low <= value <= high:
                raise bad(f"{field_name}={value!r} is outside {low}..{high}")
        if self.n & (self.n - 1):
            raise bad(f"n={self.n} is not a power of two")
        if 128 * self.n * self.r > MAX_KDF_MEMORY:
            raise bad(f"n={self.n}, r={self.r} would need more than 1 GiB of memory")
        low, high = BOUNDS["salt"]
        if not low <= len(self.salt) <= high:
            raise bad(f"a {len(self.salt)}-byte salt")

    def derive(self, passphrase: str) -> bytes:
        return Scrypt(salt=self.salt, length=KEY_SIZE, n=self.n, r=self.r, p=self.p).derive(
            passphrase.encode()
        )

    def as_dict(self) -> dict:
        return {"name": self.name, "n": self.n, "r": self.r, "p": self.p, "salt": _b64(self.salt)}


#: Every field of a version-1 format blob, and of its `kdf`.
_FIELDS = {"format_version", "repository_id", "kdf", "aead", "chunker", "wrapped_master_key"}
_KDF_FIELDS = {"name", "n", "r", "p", "salt"}


@dataclass(frozen=True)
class FormatBlob:
    """The decoded format blob; `wrapped_master_key` opens only with the right passphrase."""

    format_version: int
    repository_id: str
    kdf: Kdf
    aead: str
    chunker: ChunkerParams
    wrapped_master_key: bytes

    @classmethod
    def create(cls, master_key: bytes, passphrase: str, chunker: ChunkerParams) -> FormatBlob:
        unwrapped = cls(FORMAT_VERSION, str(uuid.uuid4()), Kdf.for_new_passphrase(), AEAD_NAME,
                        chunker, b"")
        return unwrapped.wrap(master_key, passphrase)

    def wrap(self, master_key: bytes, passphrase: str) -> FormatBlob:
        """A copy with the master key wrapped under `passphrase` (and a fresh salt)."""
        header = replace(self, kdf=Kdf.for_new_passphrase()) if self.wrapped_master_key else self
        wrapped = seal(header.kdf.derive(passphrase), master_key, header._associated_data())
        return replace(header, wrapped_master_key=wrapped)

    def unwrap(self, passphrase: str, derived: DerivedKey | None = None) -> bytes:
        """The master key; InvalidPassphrase if the passphrase (or a forged header) is wrong.

        `derived`: a key derived earlier, used if it was for this blob's KDF.
        """
        key = derived.key if derived is not None and derived.kdf == self.kdf else None
        try:
            return unseal(key or self.kdf.derive(passphrase), self.wrapped_master_key,
                          self._associated_data(), FORMAT_KEY)
        except Corrupted:
            # The checksum already proved the bytes are as written, so failing authentication
            # means the key is wrong: a wrong passphrase (or a header forged with its checksum).
            raise InvalidPassphrase("invalid passphrase") from None

    def _header(self) -> dict:
        return {
            "format_version": self.format_version,
            "repository_id": self.repository_id,
            "kdf": self.kdf.as_dict(),
            "aead": self.aead,
            "chunker": self.chunker.as_dict(),
        }

    def _associated_data(self) -> bytes:
        return _canonical(self._header())

    def encode(self) -> bytes:
        fields = {**self._header(), "wrapped_master_key": _b64(self.wrapped_master_key)}
        body = json.dumps(fields, sort_keys=True, indent=2).encode() + b"\n"
        return MAGIC + CHECKSUM_PREFIX + hashlib.sha256(body).hexdigest().encode() + b"\n" + body

    @classmethod
    def decode(cls, blob: bytes, name: str) -> FormatBlob:
        """Parse and check: Corrupted (naming `name`) for damage, UnsupportedFormat if newer."""

        def corrupted(why: str) -> Corrupted:
            return Corrupted(f"format blob {name} is corrupted: {why}")

        if not blob.startswith(MAGIC):
            raise corrupted("it does not start with the corso format marker")
        checksum_line, _, body = blob[len(MAGIC):].partition(b"\n")
        if not checksum_line.startswith(CHECKSUM_PREFIX):
            raise corrupted("its checksum line is damaged")
        if hashlib.sha256(body).hexdigest().encode() != checksum_line[len(CHECKSUM_PREFIX):]:
            raise corrupted("its checksum does not match")
        try:
            fields = json.loads(body)
            version = fields["format_version"]
        except (ValueError, KeyError, TypeError) as e:
            raise corrupted(f"unreadable body ({e})") from None
        if not isinstance(version, int) or version < 1:
            raise corrupted(f"format version {version!r} is not a version")
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(
                f"format blob {name} has format version {version}; this corso reads version "
                f"{FORMAT_VERSION} and older: upgrade corso"
            )
        # The wrapping authenticates exactly the known fields (_associated_data): a field this
        # corso does not know would be unauthenticated, so a blob holding one is refused.
        kdf = fields.get("kdf")
        unknown = sorted(set(fields) - _FIELDS) + sorted(
            f"kdf.{key}" for key in (set(kdf) if isinstance(kdf, dict) else set()) - _KDF_FIELDS)
        if unknown:
            raise corrupted(f"unknown field {', '.join(unknown)}")
        try:
            kdf_fields = fields["kdf"]
            decoded = cls(
                format_version=version,
                repository_id=str(uuid.UUID(fields["repository_id"])),
                kdf=Kdf(
                    name=kdf_fields["name"], n=kdf_fields["n"], r=kdf_fields["r"],
                    p=kdf_fields["p"], salt=base64.b64decode(kdf_fields["salt"], validate=True),
                ),
                aead=fields["aead"],
                chunker=ChunkerParams(**fields["chunker"]),
                wrapped_master_key=base64.b64decode(fields["wrapped_master_key"], validate=True),
            )
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as e:
            # AttributeError: a field of the wrong JSON type (a list where text belongs)
            raise corrupted(f"missing or malformed field ({e})") from None
        if decoded.aead != AEAD_NAME:
            raise UnsupportedFormat(f"format blob {name} uses AEAD {decoded.aead!r}; "
                                    f"this corso knows {AEAD_NAME}")
        if decoded.chunker.seed not in (None, KEYED_SEED):
            raise UnsupportedFormat(f"format blob {name} asks for chunker seed "
                                    f"{decoded.chunker.seed!r}; this corso knows {KEYED_SEED!r}")
        decoded.kdf.check_bounds(f"format blob {name}")
        return decoded


@dataclass(frozen=True)
class DerivedKey:
    """A wrapping key already derived for one Kdf (salt and parameters).

    A command derives it from the format blob the local cache kept, before the storage is
    opened: scrypt's buffer is freed before a backend's imports load (boto3: ~20 MB), so the two
    never add up in the command's peak memory. It is used only for a blob whose KDF is
    identical, and like any key it must still unwrap the master key under the blob's
    authenticated header: the cached copy decides nothing.
    """

    kdf: Kdf
    key: bytes = field(repr=False)

    @classmethod
    def of(cls, kdf: Kdf, passphrase: str) -> DerivedKey:
        return cls(kdf, kdf.derive(passphrase))


def _canonical(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
