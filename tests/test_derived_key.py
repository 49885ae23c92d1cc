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
