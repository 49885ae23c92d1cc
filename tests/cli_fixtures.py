"""The CLI as tests drive it: the `corso` fixture (in-process, fast), a subprocess runner, and
the check that an error is one line on stderr. Registered for every test in conftest.py."""

import gc
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from corso_core.cli.main import main

CORSO = str(Path(sys.executable).with_name("corso"))


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def corso(capsys):
    """Run the CLI in this process (fast) as the console script does (but for its quick exit,
    main.run)."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
        finally:
            gc.unfreeze()  # what a command froze (cli/connection.py); this process goes on
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_subprocess(*args: str, env: dict | None = None, **kwargs) -> Result:
    done = subprocess.run([CORSO, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, **kwargs)
    return Result(done.returncode, done.stdout, done.stderr)


def one_error_line(result: Result, code: int, *fragments: str) -> None:
    assert result.code == code, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("corso: error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.err
