"""corso.toml: where it lives, how it is written, what it never holds, how damage is reported."""

import os
import stat

import click
import pytest

from corso_core import config
from corso_core.errors import ConfigError, NotConnected
from corso_core.storage.backend import StorageBackend

CONNECTION = config.Connection("filesystem", "0e4f2f3a-8d1c-4c56-9a36-5d9b2a6f1c11",
                               {"path": "/srv/backups"})


def test_round_trip_and_mode_0600(tmp_path):
    path = str(tmp_path / "cfg" / "corso.toml")
    config.save(path, CONNECTION)
    assert config.load(path) == CONNECTION
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "cfg").st_mode) == 0o700


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path):
    path = str(tmp_path / "corso.toml")
    config.save(path, CONNECTION)
    inode = os.stat(path).st_ino
    other = config.Connection("filesystem", "another-id", {"path": "/elsewhere"})
    config.save(path, other)
    assert config.load(path) == other
    assert os.stat(path).st_ino != inode  # a new file renamed over the old, not rewritten
    assert os.listdir(tmp_path) == ["corso.toml"]


def test_missing_file_is_not_connected(tmp_path):
    with pytest.raises(NotConnected, match=f"no repository connected \\(no config file "
                                           f"{tmp_path}/corso.toml\\); run corso repo init or "
                                           "corso repo connect"):
        config.load(str(tmp_path / "corso.toml"))


@pytest.mark.parametrize(
    "content",
    [
        b'[connection]\nbackend = "filesys',  # truncated
        b"\xff\xfe not text",
        b'[connection]\nbackend = 3\nrepository_id = "x"\n',
        b'[other]\nkey = "value"\n',
        b'[connection]\nbackend = "filesystem"\nrepository_id = "x"\nsettings = 5\n',
    ],
)
def test_broken_file_is_a_config_error_naming_it(tmp_path, content):
    path = tmp_path / "corso.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=str(path)):
        config.load(str(path))


def test_unwritable_location_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot write config file"):
        config.save(str(tmp_path / "file" / "corso.toml"), CONNECTION)


def test_location_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "env"))
    assert config.config_path() == str(tmp_path / "env" / "corso.toml")
    assert config.config_path(str(tmp_path / "flag.toml")) == str(tmp_path / "flag.toml")
    monkeypatch.delenv("CORSO_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.config_path() == str(tmp_path / "xdg" / "corso" / "corso.toml")


def test_secret_and_init_only_options_are_never_saved():
    backend = StorageBackend(
        name="vault", description="test", open=lambda values: None,
        options=[click.Option(["--bucket"]), click.Option(["--secret-key"]),
                 click.Option(["--object-lock-days"])],
        secret_options=frozenset({"secret_key"}), init_only=frozenset({"object_lock_days"}),
    )
    values = {"bucket": "b", "secret_key": "s3cr3t", "object_lock_days": 30, "passphrase": "pw"}
    assert backend.settings(values) == {"bucket": "b"}
