"""The warm start (cli/warm_start.py): a completed command notes the files it imported; the next
run hints every noted file to the kernel on a thread, its own command's first; a damaged note
costs nothing but its use."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from corso_core.cli import warm_start
from tests.cli_fixtures import run_subprocess


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    """Each test begins as a new process would: nothing looked up yet."""
    monkeypatch.setattr(warm_start, "_command", None)
    monkeypatch.setattr(warm_start, "_record", {})
    yield
    wait_for_hints()  # none goes on into the next test


@pytest.fixture
def hinted(monkeypatch) -> list[str]:
    """The paths posix_fadvise is asked to read ahead (it still is)."""
    seen = []
    advise = os.posix_fadvise

    def recording(fd, offset, length, advice):
        assert (offset, length, advice) == (0, 0, os.POSIX_FADV_WILLNEED)
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        advise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    return seen


def record_path() -> Path:
    return Path(os.environ["CORSO_CACHE_DIR"]) / warm_start.RECORD


def write_record(record) -> None:
    record_path().parent.mkdir(parents=True, exist_ok=True)
    record_path().write_text(record if isinstance(record, str) else json.dumps(record))


def wait_for_hints() -> None:
    for thread in threading.enumerate():
        if thread.name == "corso-warm-start":
            thread.join()


def files(tmp_path: Path, *names: str) -> list[str]:
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.write_bytes(b"x" * 10)
    return [str(path) for path in paths]


@pytest.mark.parametrize("argv, words", [
    (["restore", "files", "--backup", "b1"], "restore files"),
    (["backup", "create", "files", "--path", "p"], "backup create files"),
    (["repo", "status"], "repo status"),
    (["--json", "backup", "list", "files"], None),  # a flag first: no words to go by
    (["restore", "files", "--help"], None),
    (["backup", "list", "files", "--config-file=other.toml"], "backup list files"),
    (["backup", "list", "files", "-h"], None),
    ([], None),
])
def test_the_command_words_are_those_before_the_first_flag(argv, words):
    assert warm_start.command_words(argv) == words


def test_a_completed_command_notes_what_it_imported(hinted):
    warm_start.begin(["backup", "list", "files"])  # nothing noted yet: nothing hinted
    wait_for_hints()
    assert hinted == []
    warm_start.remember()
    noted = json.loads(record_path().read_text())["backup list files"]
    assert {warm_start.__spec__.cached, warm_start.__file__} & set(noted)  # for one
    assert any(path.endswith(".so") for path in noted)  # the native libraries too
    assert all(os.path.isabs(path) for path in noted)


def test_every_noted_file_is_hinted_once_this_commands_first_and_those_gone_passed_over(
        tmp_path, hinted):
    mine = files(tmp_path, "a.pyc", "b.so")
    other = files(tmp_path, "c.pyc")
    write_record({"backup create files": [other[0], mine[1]],
                  "restore files": [mine[0], str(tmp_path / "gone"), mine[1]]})
    warm_start.begin(["restore", "files", "--backup", "b"])
    wait_for_hints()
    assert hinted == [*mine, *other]


@pytest.mark.parametrize("damage", [
    "not json",
    '["a list"]',
    '{"restore files": "a.pyc"}',
    '{"restore files": [1, 2]}',
])
def test_a_damaged_note_hints_nothing_and_is_replaced(damage, hinted):
    write_record(damage)
    warm_start.begin(["restore", "files"])
    wait_for_hints()
    assert hinted == []
    warm_start.remember()
    assert json.loads(record_path().read_text())["restore files"] == warm_start._module_files()


def test_a_note_of_the_same_files_is_not_rewritten(tmp_path):
    warm_start.begin(["backup", "list", "files"])
    warm_start.remember()
    noted = json.loads(record_path().read_text())
    noted["backup list files"].reverse()  # imported in another order: no news
    write_record(noted)
    written = record_path().stat().st_mtime_ns
    warm_start.begin(["backup", "list", "files"])
    warm_start.remember()
    assert record_path().stat().st_mtime_ns == written
    noted["backup list files"].pop()  # a file fewer: news
    write_record(noted)
    warm_start.begin(["backup", "list", "files"])
    warm_start.remember()
    assert json.loads(record_path().read_text())["backup list files"] == (
        warm_start._module_files())


def test_only_the_latest_notes_are_kept():
    for number in range(warm_start.KEPT_NOTES + 2):
        warm_start.begin(["backup", "details", f"n{number}"])
        warm_start.remember()
    kept = list(json.loads(record_path().read_text()))
    assert kept == [f"backup details n{number}" for number in
                    reversed(range(2, warm_start.KEPT_NOTES + 2))]


def test_a_run_that_did_not_begin_notes_nothing():
    """main() called in a process of its own (tests, embedding) is no console script's run."""
    warm_start.remember()
    assert not record_path().exists()


def test_the_console_script_notes_a_completed_command_and_not_a_failed_one(tmp_path):
    init = run_subprocess("repo", "init", "filesystem", "--path", str(tmp_path / "repo"),
                          "--passphrase", "pw")
    assert init.code == 0, init
    assert run_subprocess("backup", "list", "files", "--passphrase", "pw").code == 0
    assert run_subprocess("backup", "details", "files", "--backup", "nope",
                          "--passphrase", "pw").code != 0
    record = json.loads(record_path().read_text())
    assert list(record) == ["backup list files", "repo init filesystem"]
    assert any(path.endswith("corso_core/cli/main.py") or "cli/__pycache__/main." in path
               for path in record["backup list files"])


HINTED_BEFORE_CORSO_LOADS = """
import importlib.abc, os, sys
class NoteTheHints(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "corso_core.cli.cached_key":  # the first of corso's own heavier imports
            begun = sys.modules["corso_core.cli.warm_start"]._command is not None
            os.write(2, b"begun: %d\\n" % begun)
        return None
sys.meta_path.insert(0, NoteTheHints())
sys.argv = ["corso", "backup", "list", "files", "--passphrase", "pw"]
from corso_core.cli.launch import run
run()
"""


def test_the_console_script_begins_before_it_loads_the_rest_of_corso(tmp_path):
    assert run_subprocess("repo", "init", "filesystem", "--path", str(tmp_path / "repo"),
                          "--passphrase", "pw").code == 0
    done = subprocess.run([sys.executable, "-c", HINTED_BEFORE_CORSO_LOADS],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == "begun: 1"
