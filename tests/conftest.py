"""Shared test settings. Every test (and every corso subprocess it starts) uses the cheap KDF."""

import os
import signal

import pytest

from corso_core.repo.format import TEST_CHEAP_KDF_ENV

os.environ[TEST_CHEAP_KDF_ENV] = "1"

# A test run started in the background by a shell without job control (`make test &` in a
# script) has Ctrl-C ignored, which every corso it starts inherits and, as `nohup` asks, keeps:
# the tests that stop one with SIGINT failed, exit 0 where 130 was due. Python's own handler is
# reset to the default in a child, so they get a Ctrl-C that stops them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: Fixtures: the CLI runner (tests/cli_fixtures.py), S3 servers (SeaweedFS, moto with IAM:
#: tests/s3_servers.py), the backup engine's repository and tricky tree (tests/engine_fixtures.py).
pytest_plugins = ["cli_fixtures", "s3_servers", "engine_fixtures"]


@pytest.fixture(autouse=True)
def _private_config_dir(tmp_path, monkeypatch):
    """No test touches the real user's corso.toml or cache, or inherits a passphrase."""
    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "corso-config"))
    monkeypatch.setenv("CORSO_CACHE_DIR", str(tmp_path / "corso-cache"))
    monkeypatch.delenv("CORSO_PASSPHRASE", raising=False)
