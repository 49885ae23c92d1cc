"""`make demo` runs docs/demo.sh: it must work on a fresh folder and again on the same one."""

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "docs" / "demo.sh"
CORSO = str(Path(sys.executable).with_name("corso"))


def run_demo(cwd: Path) -> subprocess.CompletedProcess:
    # The demo sets its own config dir and passphrase; the cheap test KDF is inherited.
    return subprocess.run(["bash", str(DEMO), CORSO], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_demo_initializes_a_repository_and_shows_its_status(tmp_path):
    first = run_demo(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "created at" in first.stdout and "repository ID:" in first.stdout
    assert (tmp_path / "demo" / "repository" / "format").exists()
    config = (tmp_path / "demo" / "config" / "corso.toml").read_text()
    assert "passphrase" not in config
    assert any((tmp_path / "demo" / "cache").iterdir())  # not the user's ~/.cache
    again = run_demo(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already exists" in again.stdout
