"""The two distributions as a user installs them: corso-backup, then corso-s3.

Wheels are built from a copy of the tree (so concurrent builds never share a build/ folder)
and installed into a fresh venv that sees nothing of the test environment (no
--system-site-packages); pip resolves the dependencies as it would for a user, from its cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_EVERYWHERE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
_AT_THE_ROOT = {".venv", ".git", ".pytest_cache", ".ruff_cache", "demo", "bench", "tests"}


def _skip(directory: str, names: list[str]) -> set[str]:
    """What a wheel never contains: caches, build output and the big top-level folders."""
    skipped = set(_EVERYWHERE(directory, names))
    return skipped | (_AT_THE_ROOT & set(names) if Path(directory) == ROOT else set())


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, **kwargs)


def pip(*args) -> None:
    done = run(sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args)
    assert done.returncode == 0, done.stderr


def test_core_wheel_alone_hints_then_the_plugin_wheel_works(tmp_path, seaweedfs, s3_prefix):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=_skip)
    wheels = tmp_path / "wheels"
    pip("wheel", "--no-deps", "-w", wheels, source, source / "plugins" / "corso_s3")
    core, = wheels.glob("corso_backup-*.whl")
    plugin, = wheels.glob("corso_s3-*.whl")

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python, corso = venv / "bin" / "python", venv / "bin" / "corso"
    pip("--python", python, "install", core)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "CORSO_CONFIG_DIR": str(tmp_path / "config"), "AWS_EC2_METADATA_DISABLED": "true"}

    hint = run(corso, "repo", "init", "s3", "--bucket", seaweedfs.bucket, env=env)
    assert hint.returncode == 2
    assert hint.stderr == ('corso: error: backend "s3" is not installed; add it with: '
                           "pip install corso-s3 (from a checkout of corso: pip install "
                           "./plugins/corso_s3)\n")
    assert run(python, "-c", "import boto3").returncode != 0

    pip("--python", python, "install", plugin)
    env.update(AWS_ACCESS_KEY_ID=seaweedfs.access_key,
               AWS_SECRET_ACCESS_KEY=seaweedfs.secret_key)
    done = run(corso, "repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", "pw",
               env=env)
    assert done.returncode == 0, done.stderr
    listed = seaweedfs.admin().list_objects_v2(Bucket=seaweedfs.bucket, Prefix=s3_prefix)
    assert f"{s3_prefix}format" in [o["Key"] for o in listed["Contents"]]
    plugins = run(corso, "plugins", env=env).stdout
    assert "corso-s3" in plugins

    # The plugin alone pulls in this core, never the unrelated "corso" on PyPI (a board game
    # its dependency once named): pip finds corso-backup beside it, and nowhere else.
    alone = tmp_path / "plugin-alone"
    assert run(sys.executable, "-m", "venv", "--without-pip", alone).returncode == 0
    pip("--python", alone / "bin" / "python", "install", "--find-links", wheels, plugin)
    shown = run(sys.executable, "-m", "pip", "--python", alone / "bin" / "python", "list",
                "--format=freeze").stdout
    assert "corso-backup==" in shown and "corso==" not in shown, shown
    assert "corso-s3" in run(alone / "bin" / "corso", "plugins", env=env).stdout
