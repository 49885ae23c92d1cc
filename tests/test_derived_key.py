"""A command derives its key from the cached format blob before it opens the storage."""

import dataclasses
import os
from pathlib import Path

import pytest
from cli_fixtures import one_error_line

from corso_core import config, plugins
from corso_core.repo.format import FORMAT_KEY, FormatBlob, Kdf


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


def test_the_second_command_derives_the_key_once_before_it_opens_the_storage(
        repo, corso, events):
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert events == [("open", "filesystem"), ("derive", salt)]  # nothing cached yet
    assert salt_of(cached_format().read_bytes()) == salt
    events.clear()
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    assert events == [("derive", salt), ("open", "filesystem")]


def test_a_cached_copy_of_an_older_passphrase_costs_a_derivation_and_is_renewed(
        repo, corso, events):
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    assert corso("repo", "update-passphrase", "--passphrase", "pw",
                 "--new-passphrase", "pw2").code == 0
    stale = salt_of(cached_format().read_bytes())
    current = salt_of((repo / FORMAT_KEY).read_bytes())
    assert stale != current
    events.clear()
    assert corso("repo", "status", "--passphrase", "pw2").code == 0
    assert events == [("derive", stale), ("open", "filesystem"), ("derive", current)]
    assert salt_of(cached_format().read_bytes()) == current
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1, "invalid passphrase")


def test_a_damaged_cached_copy_is_replaced(repo, corso, events):
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    cached_format().write_bytes(b"corso repository format\nsha256:00\n{}")
    events.clear()
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    salt = salt_of((repo / FORMAT_KEY).read_bytes())
    assert events == [("open", "filesystem"), ("derive", salt)]
    assert salt_of(cached_format().read_bytes()) == salt


def test_a_wrong_passphrase_fails_as_before_with_the_cache_in_place(repo, corso):
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    one_error_line(corso("repo", "status", "--passphrase", "wrong"), 1, "invalid passphrase")
