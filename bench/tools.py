"""One adapter per backup tool: how to init a repository, back up, restore, and read its version.

An adapter only builds command lines; `bench.run` executes and measures them, so every tool is
timed the same way. Each tool keeps its caches and config under the row's own directory (`home`),
never in the user's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

PASSPHRASE = "corso-bench-passphrase"


@dataclass
class Repository:
    """Where one row's repository lives: a local directory, or a bucket and prefix on S3."""

    target: str  # "local" or "s3"
    path: Path | None = None
    endpoint: str = ""  # host:port, S3 only
    bucket: str = ""
    prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)  # S3 credentials


@dataclass
class Command:
    argv: list[str]
    cwd: Path | None = None


class Tool(ABC):
    """The adapter interface; subclasses fill in the command lines."""

    name = ""  # the row's name: one program may make several rows (borg-lz4, borg-zstd3)
    program = ""
    targets: tuple[str, ...] = ("local",)

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when the tool can run here, else why not (shown in the report)."""

    def version(self) -> str:
        """The version number the program reports (second word of its version line)."""
        return _first_line_of([self.program, "--version"]).split()[1]

    def env(self, home: Path) -> dict[str, str]:
        """Environment additions: passphrase and cache locations under `home`."""
        return {"XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config")}

    @abstractmethod
    def init(self, repo: Repository, home: Path) -> Command:
        """The command line of this step."""

    @abstractmethod
    def backup(self, repo: Repository, home: Path, source: Path, label: str) -> Command:
        """The command line of this step."""

    def backup_id(self, stdout: str, label: str) -> str:
        """The ID of the backup just made, from the backup command's output."""
        return label

    @abstractmethod
    def restore(self, repo: Repository, home: Path, backup_id: str, destination: Path) -> Command:
        """The command line of this step."""

    def restored_root(self, destination: Path, source: Path) -> Path:
        """Where, under `destination`, the restored copy of `source` ends up."""
        return destination / source.relative_to(source.anchor)


def _first_line_of(argv: list[str]) -> str:
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return output.strip().splitlines()[0]


def _missing_binary(binary: str) -> str | None:
    return None if shutil.which(binary) else f"{binary} is not installed"


class Restic(Tool):
    name = program = "restic"
    targets = ("local", "s3")

    def unavailable_reason(self) -> str | None:
        return _missing_binary(self.program)

    def version(self) -> str:
        return _first_line_of([self.program, "version"]).split()[1]  # it has no --version

    def env(self, home: Path) -> dict[str, str]:
        return super().env(home) | {"RESTIC_PASSWORD": PASSPHRASE}

    def _repo_args(self, repo: Repository, home: Path) -> list[str]:
        if repo.target == "s3":
            location = f"s3:http://{repo.endpoint}/{repo.bucket}/{repo.prefix}"
        else:
            location = str(repo.path)
        return ["restic", "--repo", location, "--cache-dir", str(home / "cache"), "--quiet"]

    def init(self, repo: Repository, home: Path) -> Command:
        return Command(self._repo_args(repo, home) + ["init"])

    def backup(self, repo: Repository, home: Path, source: Path, label: str) -> Command:
        return Command(self._repo_args(repo, home) + ["backup", "--json", str(source)])

    def backup_id(self, stdout: str, label: str) -> str:
        summary = json.loads(stdout.strip().splitlines()[-1])
        return summary["snapshot_id"]

    def restore(self, repo: Repository, home: Path, backup_id: str, destination: Path) -> Command:
        args = ["restore", backup_id, "--target", str(destination)]
        return Command(self._repo_args(repo, home) + args)


class Borg(Tool):
    """borg 1.x with one compression setting (`lz4` or `zstd,3`); local repositories only."""

    program = "borg"
    targets = ("local",)

    def __init__(self, compression: str):
        self.compression = compression
        self.name = "borg-" + compression.replace(",", "")

    def unavailable_reason(self) -> str | None:
        return _missing_binary(self.program)

    def env(self, home: Path) -> dict[str, str]:
        return super().env(home) | {"BORG_PASSPHRASE": PASSPHRASE, "BORG_BASE_DIR": str(home)}

    def init(self, repo: Repository, home: Path) -> Command:
        return Command(["borg", "init", "--encryption=repokey-blake2", str(repo.path)])

    def backup(self, repo: Repository, home: Path, source: Path, label: str) -> Command:
        archive = f"{repo.path}::{label}"
        return Command(["borg", "create", "--compression", self.compression, archive, str(source)])

    def restore(self, repo: Repository, home: Path, backup_id: str, destination: Path) -> Command:
        destination.mkdir(parents=True, exist_ok=True)
        return Command(["borg", "extract", f"{repo.path}::{backup_id}"], cwd=destination)


class Corso(Tool):
    """This project's CLI, run from the same environment as the harness."""

    name = "corso"
    targets = ("local", "s3")

    def __init__(self, executable: str | None = None):
        self.program = executable or str(Path(sys.executable).parent / "corso")

    def unavailable_reason(self) -> str | None:
        for command in (["backup", "create", "files"], ["restore", "files"]):
            probe = subprocess.run([self.program, *command, "--help"], capture_output=True)
            if probe.returncode != 0:
                return f"`corso {' '.join(command)}` does not exist yet"
        return None

    def version(self) -> str:
        return _first_line_of([self.program, "--version"]).split()[-1]  # "corso, version X"

    def env(self, home: Path) -> dict[str, str]:
        return super().env(home) | {
            "CORSO_PASSPHRASE": PASSPHRASE, "CORSO_CONFIG_DIR": str(home / "config"),
            "CORSO_CACHE_DIR": str(home / "cache"),
        }

    def init(self, repo: Repository, home: Path) -> Command:
        if repo.target == "s3":
            where = ["s3", "--bucket", repo.bucket, "--prefix", repo.prefix,
                     "--endpoint", repo.endpoint, "--disable-tls"]
        else:
            where = ["filesystem", "--path", str(repo.path)]
        return Command([self.program, "repo", "init", *where, "--hide-progress"])

    def backup(self, repo: Repository, home: Path, source: Path, label: str) -> Command:
        argv = ["backup", "create", "files", "--path", str(source), "--json", "--hide-progress"]
        return Command([self.program, *argv])

    def backup_id(self, stdout: str, label: str) -> str:
        return json.loads(stdout)["id"]

    def restore(self, repo: Repository, home: Path, backup_id: str, destination: Path) -> Command:
        argv = ["restore", "files", "--backup", backup_id, "--destination", str(destination),
                "--hide-progress"]
        return Command([self.program, *argv])

    def restored_root(self, destination: Path, source: Path) -> Path:
        return destination / source.name


def all_tools() -> list[Tool]:
    return [Corso(), Restic(), Borg("lz4"), Borg("zstd,3")]


def tool_environment(tool: Tool, home: Path, repo: Repository) -> dict[str, str]:
    """The whole environment a tool's commands run with."""
    return dict(os.environ) | tool.env(home) | repo.env
