"""A command derives its key from the cached format blob before it opens the storage."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_fixtures import one_error_line

from corso_core import config, plugins
from corso_core.cli import cached_key
from corso_core.repo.cache import BlobCache, read_cached
from corso_core.repo.format import FORMAT_KEY, FormatBlob, Kdf
from corso_core.sources.files import inodes


@pytest.fixture
def repo(tmp_path, corso) -> Path:
    path = tmp_path / "repo"
    assert corso("repo", "init", "filesystem", "--path", str(path), "--passphrase", "pw").code == 0
    return path


@pytest.fixture
def events(monkeypatch) -> list[tuple[str, object]]:
    """("derive", salt) for every scrypt run and ("open", backend) for every storage opened."""
    seen = []
    derive, backend = Kdf.derive, plugins.backend

    def recording(self, passphrase):
        seen.append(("derive", self.salt))
        return derive(self, passphrase)

    def noting_the_open(name):
        found = backend(name)

        def open_storage(values):
            seen.append(("open", name))
            return found.open(values)

        return dataclasses.replace(found, open=open_storage)

    monkeypatch.setattr(Kdf, "derive", recording)
    monkeypatch.setattr(plugins, "backend", noting_the_open)
    return seen


def cached_format() -> Path:
    repository_id = config.load(os.path.join(os.environ["CORSO_CONFIG_DIR"],
                                             "corso.toml")).repository_id
    return Path(os.environ["CORSO_CACHE_DIR"]) / repository_id / FORMAT_KEY


def salt_of(raw: bytes) -> bytes:
    return FormatBlob.decode(raw, "test").kdf.salt


def test_after_init_a_command_derives_the_key_once_before_it_opens_the_storage(
        repo, corso, events):
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert salt_of(cached_format().read_bytes()) == salt  # init kept a copy
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    assert events == [("derive", salt), ("open", "filesystem")]


def test_without_a_cached_copy_the_key_is_derived_after_opening_and_the_copy_kept(
        repo, corso, events):
    cached_format().unlink()
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert events == [("open", "filesystem"), ("derive", salt)]
    assert salt_of(cached_format().read_bytes()) == salt


def test_update_passphrase_renews_the_cached_copy(repo, corso, events):
    assert corso("repo", "update-passphrase", "--passphrase", "pw",
                 "--new-passphrase", "pw2").code == 0
    current = salt_of((repo / FORMAT_KEY).read_bytes())
    assert salt_of(cached_format().read_bytes()) == current
    events.clear()
    assert corso("repo", "status", "--passphrase", "pw2").code == 0
    assert events == [("derive", current), ("open", "filesystem")]


def test_a_copy_from_before_a_passphrase_change_elsewhere_costs_a_derivation_and_is_renewed(
        repo, corso, events, monkeypatch, tmp_path):
    stale = salt_of(cached_format().read_bytes())
    with monkeypatch.context() as elsewhere:  # another machine, with its own cache
        elsewhere.setenv("CORSO_CACHE_DIR", str(tmp_path / "other-cache"))
        assert corso("repo", "update-passphrase", "--passphrase", "pw",
                     "--new-passphrase", "pw2").code == 0
    current = salt_of((repo / FORMAT_KEY).read_bytes())
    assert stale != current and salt_of(cached_format().read_bytes()) == stale
    events.clear()
    assert corso("repo", "status", "--passphrase", "pw2").code == 0
    assert events == [("derive", stale), ("open", "filesystem"), ("derive", current)]
    assert salt_of(cached_format().read_bytes()) == current
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1, "invalid passphrase")


def test_a_damaged_cached_copy_is_replaced(repo, corso, events):
    cached_format().write_bytes(b"corso repository format\nsha256:00\n{}")
    events.clear()
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert events == [("open", "filesystem"), ("derive", salt)]
    assert salt_of(cached_format().read_bytes()) == salt


def test_a_wrong_passphrase_fails_as_before_with_the_cache_in_place(repo, corso):
    assert cached_format().exists()
    one_error_line(corso("repo", "status", "--passphrase", "wrong"), 1, "invalid passphrase")


@pytest.fixture
def deriving_threads(events, monkeypatch) -> list[str]:
    """The name of the thread of every scrypt run (on top of `events`)."""
    names, derive = [], Kdf.derive

    def recording(self, passphrase):
        names.append(threading.current_thread().name)
        return derive(self, passphrase)

    monkeypatch.setattr(Kdf, "derive", recording)
    return names


def test_a_backup_command_derives_its_key_while_it_loads(repo, corso, events, deriving_threads,
                                                         monkeypatch):
    """With the passphrase in the environment, the key is derived in a thread begun before
    click parses the command line, and the command opens the repository with it."""
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    assert corso("backup", "list", "files").code == 0
    assert events == [("derive", salt_of((repo / FORMAT_KEY).read_bytes())), ("open", "filesystem")]
    assert deriving_threads == ["early-key"]


#: The console script, noting whether the key's derivation has begun when a module starts to
#: load: the CLI's main module, or click (their imports are what the derivation is to overlap).
#: Begun, not still running: with the tests' cheap KDF the thread may well be done by then.
DERIVING_BEFORE_THE_CLI_LOADS = """
import importlib.abc, os, sys
class NoteDerivation(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == {module!r}:
            cached_key = sys.modules.get("corso_core.cli.cached_key")
            begun = cached_key is not None and cached_key._early is not None
            os.write(2, b"deriving: %d\\n" % begun)
        return None
sys.meta_path.insert(0, NoteDerivation())
sys.argv = ["corso", "backup", "list", "files"]
from corso_core.cli.launch import run
run()
"""


@pytest.mark.parametrize("module", ["corso_core.cli.main", "click"])
def test_the_console_script_begins_deriving_before_it_loads_the_cli(repo, monkeypatch, module):
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    probe = DERIVING_BEFORE_THE_CLI_LOADS.replace("{module!r}", repr(module))
    done = subprocess.run([sys.executable, "-c", probe],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == "deriving: 1"


@pytest.mark.parametrize("command", [
    ["backup", "list", "files", "--passphrase", "pw"],
    ["backup", "list", "files", "--passphrase=pw"],
    ["repo", "status"],
])
def test_with_a_passphrase_flag_or_in_other_commands_the_key_is_derived_on_opening(
        repo, corso, events, deriving_threads, monkeypatch, command):
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    assert corso(*command).code == 0
    assert deriving_threads == ["MainThread"]
    assert events == [("derive", salt_of((repo / FORMAT_KEY).read_bytes())), ("open", "filesystem")]


def test_a_flag_naming_another_config_file_is_not_derived_for_early(repo, corso, tmp_path,
                                                                    deriving_threads, monkeypatch):
    other = tmp_path / "other.toml"
    other.write_bytes(Path(os.environ["CORSO_CONFIG_DIR"], "corso.toml").read_bytes())
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    assert corso("backup", "list", "files", "--config-file", str(other)).code == 0
    assert deriving_threads == ["MainThread"]


def test_a_key_derived_early_serves_only_its_own_repository_and_passphrase(repo, corso,
                                                                          monkeypatch):
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    repository_id = config.load(config.config_path()).repository_id
    kdf = cached_key.cached_kdf(repository_id)
    cached_key.start(["backup", "list", "files"])
    other_passphrase = cached_key.derive(repository_id, "pw2")
    assert other_passphrase.key == kdf.derive("pw2") != kdf.derive("pw")
    cached_key.start(["backup", "list", "files"])
    assert cached_key.derive("0" * 32, "pw") is None  # no cached copy for that ID
    cached_key.start(["backup", "list", "files"])
    assert cached_key.derive(repository_id, "pw").key == kdf.derive("pw")


def test_help_derives_nothing(repo, corso, deriving_threads, monkeypatch):
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    assert corso("restore", "files", "--help").code == 0
    cached_key.derive("none", "pw")  # would join a thread begun for the help
    assert deriving_threads == []


def test_a_wrong_passphrase_in_the_environment_fails_as_before(repo, corso, monkeypatch):
    monkeypatch.setenv("CORSO_PASSPHRASE", "wrong")
    one_error_line(corso("backup", "list", "files"), 1, "invalid passphrase")


def test_backup_create_starts_its_warm_up_between_the_key_and_the_storage(
        repo, corso, events, monkeypatch, tmp_path):
    """The du child shares this process's memory until its exec: started after scrypt's
    buffer is freed, a monitor summing the tree's RSS never counts that buffer twice."""
    real_popen = inodes.subprocess.Popen

    def noting_du(args, **kwargs):
        events.append(("du", args[-1]))
        return real_popen(args, **kwargs)

    monkeypatch.setattr(inodes.subprocess, "Popen", noting_du)
    (tmp_path / "tree").mkdir()
    assert corso("backup", "create", "files", "--path", str(tmp_path / "tree"),
                 "--passphrase", "pw").code == 0
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert events == [("derive", salt), ("du", str(tmp_path / "tree")), ("open", "filesystem")]


def test_a_restore_opens_its_storage_before_it_derives_its_key(repo, corso, events, tmp_path):
    """Its storage's imports then run while scrypt ends (uses_repository's storage_first);
    a backup keeps the key first, as its peak memory is start-up's."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_bytes(b"x")
    created = corso("backup", "create", "files", "--path", str(tmp_path / "tree"),
                    "--passphrase", "pw", "--json")
    assert created.code == 0
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert events[-2:] == [("derive", salt), ("open", "filesystem")]
    events.clear()
    assert corso("restore", "files", "--backup", json.loads(created.out)["id"], "--destination",
                 str(tmp_path / "out"), "--passphrase", "pw").code == 0
    assert events == [("open", "filesystem"), ("derive", salt)]
    assert (tmp_path / "out" / "tree" / "f").read_bytes() == b"x"


def test_with_the_passphrase_in_the_environment_a_damaged_cached_copy_is_replaced(
        repo, corso, events, deriving_threads, monkeypatch):
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    cached_format().write_bytes(b"corso repository format\nsha256:00\n{}")
    assert corso("backup", "list", "files").code == 0
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert events == [("open", "filesystem"), ("derive", salt)]
    assert deriving_threads == ["MainThread"]
    assert salt_of(cached_format().read_bytes()) == salt


#: The console script, with a cache whose blobs cannot be deleted (a read-only filesystem).
UNDELETABLE_CACHE = """
import sys
from corso_core.errors import StorageError
from corso_core.storage.filesystem import FilesystemStorage

def refused(self, key):
    raise StorageError(f"deleting {self._path(key)}: read-only file system")

FilesystemStorage._delete = refused
sys.argv = ["corso", "backup", "list", "files"]
from corso_core.cli.launch import run
run()
"""


def test_a_damaged_cached_copy_that_cannot_be_discarded_is_one_corso_warning(repo, monkeypatch):
    """The console script begins the key before logging is set up: discarding the damaged copy
    there printed the cache's warning bare, and, reported once per process, never as
    `corso: warning:`."""
    cached_format().write_bytes(b"corso repository format\nsha256:00\n{}")
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    done = subprocess.run([sys.executable, "-c", UNDELETABLE_CACHE], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.splitlines()
    assert warning.startswith("corso: warning: local cache ") and "read-only" in warning


@pytest.mark.parametrize("key", [FORMAT_KEY, "index/0123-abcd"])
def test_the_early_read_of_a_cached_blob_finds_what_the_cache_keeps(tmp_path, monkeypatch, key):
    """read_cached (the console script's, without the filesystem backend) and BlobCache agree
    on where a blob is kept; a blob not there, or a repository ID no cache may have, is None."""
    monkeypatch.setenv("CORSO_CACHE_DIR", str(tmp_path))
    cache = BlobCache("repo-1")
    cache.put(key, b"kept")
    assert read_cached("repo-1", key) == b"kept" == cache.get(key)
    assert read_cached("repo-1", "index/other") is None
    assert read_cached("../repo-1", key) is None
