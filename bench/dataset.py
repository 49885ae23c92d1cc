"""The benchmark's dataset: deterministic (fixed seed), about 1 GiB at size 1, scaled by --size.

Three kinds of content, so that every stage of a backup tool is exercised:
- ~15,000 small text-like files in nested directories (many files: metadata and per-file cost);
- ~40 medium files, half random and half repetitive (compression must tell the halves apart);
- three large files: random, highly compressible, and random with internal duplicate regions at
  unaligned offsets (only a content-defined chunker finds those).
`mutate` then changes about 2 %: inserts in the middle of the large files, rewrites of some small
files and of regions of medium files, a few new and deleted files.

Random bytes come from the BLAKE3 extendable output (seeded, ~1.5 GB/s), not `random.randbytes`
(~150 MB/s), so generating the data does not dominate the run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
from dataclasses import dataclass
from pathlib import Path

import blake3

SEED = 20261125
MiB = 1024 * 1024

# At size 1: counts and sizes chosen to total about 1 GiB.
SMALL_FILES = 15_000
SMALL_MEAN_BYTES = 8 * 1024
FILES_PER_DIR = 30
MEDIUM_FILES = 40
MEDIUM_TOTAL_BYTES = 240 * MiB
LARGE_FILE_BYTES = 220 * MiB
WRITE_BLOCK = 4 * MiB
MEDIUM_DIR, LARGE_DIR = "media", "large"
BIG_DIRS = (MEDIUM_DIR, LARGE_DIR)


class RandomBytes:
    """A seekable stream of pseudo-random bytes: the same seed and label give the same bytes."""

    def __init__(self, seed: int, label: str):
        self._hasher = blake3.blake3(f"corso-bench/{seed}/{label}".encode())
        self._position = 0

    def read(self, length: int) -> bytes:
        data = self._hasher.digest(length=length, seek=self._position)
        self._position += length
        return data


class TextLike:
    """Word and log-line generators: text that compresses like real text and logs do."""

    def __init__(self, rng: random.Random):
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        letter_weights = list(itertools.accumulate(range(len(letters), 0, -1)))
        self.words = [
            "".join(rng.choices(letters, cum_weights=letter_weights, k=rng.randint(1, 10)))
            for _ in range(8_000)
        ] + [".\n", ",", "\n\n"]
        # Zipf-like word frequencies, as in natural language.
        self._word_weights = list(itertools.accumulate(1 / (i + 1) for i in range(len(self.words))))
        self.log_lines = [self._log_line(rng, i) for i in range(4_096)]

    def _log_line(self, rng: random.Random, i: int) -> bytes:
        return (
            f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{i:04d}Z host-{rng.randint(1, 12)} "
            f"svc={rng.choice(self.words[:200])} status={rng.choice((200, 200, 304, 404, 500))} "
            f"latency_ms={rng.randint(1, 900)} msg={' '.join(rng.choices(self.words[:500], k=6))}\n"
        ).encode()

    def text(self, rng: random.Random, size: int) -> bytes:
        """About `size` bytes of prose-like words."""
        words = rng.choices(self.words, cum_weights=self._word_weights, k=size // 5 + 1)
        return " ".join(words).encode()[:size]

    def logs(self, rng: random.Random, size: int) -> bytes:
        """About `size` bytes of log lines drawn from a fixed pool (highly compressible)."""
        lines = rng.choices(self.log_lines, k=size // 90 + 1)
        return b"".join(lines)[:size]


@dataclass
class DatasetSummary:
    files: int
    bytes: int

    @classmethod
    def of(cls, root: Path) -> DatasetSummary:
        files = total = 0
        for directory, _, names in os.walk(root):
            for name in names:
                files += 1
                total += os.lstat(os.path.join(directory, name)).st_size
        return cls(files=files, bytes=total)


def _write_in_blocks(path: Path, size: int, block_source) -> None:
    with open(path, "wb") as f:
        written = 0
        while written < size:
            block = block_source(min(WRITE_BLOCK, size - written))
            f.write(block)
            written += len(block)


def _small_file_size(rng: random.Random) -> int:
    # Log-uniform between 100 B and 64 KiB: mean about 8 KiB, most files much smaller.
    return int(100 * (640 ** rng.random()))


def _make_directories(root: Path, rng: random.Random, words: list[str], count: int) -> list[Path]:
    directories = [root]
    for i in range(count):
        parent = rng.choice(directories)
        if len(parent.relative_to(root).parts) >= 5:
            parent = root
        directory = parent / f"{rng.choice(words[:2000])}-{i}"
        directory.mkdir()
        directories.append(directory)
    return directories


def _write_duplicating_file(path: Path, size: int, source: RandomBytes, rng: random.Random) -> None:
    """Random data in which later regions repeat earlier ones, shifted to unaligned offsets."""
    segment = max(4096, min(8 * MiB, size // 24))
    with open(path, "w+b") as f:
        written = 0
        while written < size:
            length = min(rng.randint(segment // 2, segment), size - written)
            if written > 2 * segment and rng.random() < 0.4:
                start = rng.randrange(1, written - length, 2)  # odd: unaligned
                f.flush()  # pread sees only what left Python's buffer
                data = os.pread(f.fileno(), length, start)
            else:
                data = source.read(length)
            f.write(data)
            written += len(data)


def generate(root: Path, size: float = 1.0, seed: int = SEED) -> DatasetSummary:
    """Write the dataset into `root` (which must not exist or be empty)."""
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ValueError(f"{root} is not empty")
    rng = random.Random(seed)
    text = TextLike(rng)
    random_bytes = RandomBytes(seed, "data")

    small_count = max(10, round(SMALL_FILES * size))
    directories = _make_directories(root, rng, text.words, max(1, small_count // FILES_PER_DIR))
    for i in range(small_count):
        directory = rng.choice(directories)
        suffix = rng.choice((".txt", ".md", ".log", ".csv", ".py"))
        (directory / f"{rng.choice(text.words[:3000])}-{i}{suffix}").write_bytes(
            text.text(rng, _small_file_size(rng))
        )

    medium_dir = root / MEDIUM_DIR
    medium_dir.mkdir()
    medium_count = max(2, round(MEDIUM_FILES * size))
    medium_mean = MEDIUM_TOTAL_BYTES * size / medium_count
    for i in range(medium_count):
        half = int(medium_mean * rng.uniform(0.3, 1.7)) // 2
        with open(medium_dir / f"medium-{i:03d}.bin", "wb") as f:
            f.write(random_bytes.read(half))
            f.write(text.logs(rng, half))

    large_dir = root / LARGE_DIR
    large_dir.mkdir()
    large_size = max(64 * 1024, int(LARGE_FILE_BYTES * size))
    _write_in_blocks(large_dir / "random.bin", large_size, random_bytes.read)
    _write_in_blocks(large_dir / "logs.txt", large_size, lambda n: text.logs(rng, n))
    _write_duplicating_file(large_dir / "duplicates.bin", large_size, random_bytes, rng)
    return DatasetSummary.of(root)


def _insert_in_middle(path: Path, data: bytes) -> None:
    """Insert `data` in the middle of a file, writing a new file and renaming it into place."""
    middle = path.stat().st_size // 2 + 7  # unaligned on purpose
    temporary = path.with_name(path.name + ".mutating")
    with open(path, "rb") as old, open(temporary, "wb") as new:
        for start in range(0, middle, WRITE_BLOCK):
            new.write(old.read(min(WRITE_BLOCK, middle - start)))
        new.write(data)
        while block := old.read(WRITE_BLOCK):
            new.write(block)
    os.replace(temporary, path)


def mutate(root: Path, seed: int = SEED) -> int:
    """Change about 2 % of the dataset in place; return the number of bytes written or removed."""
    rng = random.Random(seed + 1)
    text = TextLike(random.Random(seed))
    random_bytes = RandomBytes(seed, "mutation")
    changed = 0

    for path in sorted((root / LARGE_DIR).iterdir()):
        insert = random_bytes.read(max(1024, path.stat().st_size * 3 // 200))
        _insert_in_middle(path, insert)
        changed += len(insert)

    mediums = sorted((root / MEDIUM_DIR).iterdir())
    for path in rng.sample(mediums, max(1, len(mediums) // 10)):
        length = path.stat().st_size // 8
        with open(path, "r+b") as f:
            f.seek(rng.randrange(0, path.stat().st_size - length + 1))
            f.write(random_bytes.read(length))
        changed += length

    small = sorted(
        p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] not in BIG_DIRS
    )
    rewritten = rng.sample(small, max(1, len(small) // 50))
    kept = sorted(set(small) - set(rewritten))
    for path in rewritten:
        data = text.text(rng, _small_file_size(rng))
        changed += len(data)
        path.write_bytes(data)
    for path in rng.sample(kept, max(1, len(small) // 100)):
        changed += path.stat().st_size
        path.unlink()
    for i in range(max(1, len(small) // 100)):
        data = text.text(rng, _small_file_size(rng))
        changed += len(data)
        (rng.choice(rewritten).parent / f"new-{i}.txt").write_bytes(data)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory to create (must be empty)")
    parser.add_argument("--size", type=float, default=1.0, help="scale: 1 = about 1 GiB")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--mutate", action="store_true", help="mutate an existing dataset")
    args = parser.parse_args()
    if args.mutate:
        print(f"changed {mutate(args.root, args.seed)} bytes")
    else:
        summary = generate(args.root, args.size, args.seed)
        print(f"{summary.files} files, {summary.bytes} bytes")


if __name__ == "__main__":
    main()
