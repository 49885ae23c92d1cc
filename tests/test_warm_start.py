"""The warm start (cli/warm_start.py): a completed command notes what it imported; the next runs
hint those files to the kernel and import the backend's preload on a thread, only for the same
backend; a damaged note costs nothing but its use."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from corso_core import plugins
from corso_core.cli import warm_start
from tests.cli_fixtures import run_subprocess

PROBE_MODULE = "corso_warm_start_probe"


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    """Each test begins as a new process would: nothing looked up, noted or opened."""
    monkeypatch.setattr(warm_start, "_command", None)
    monkeypatch.setattr(warm_start, "_record", {})
    monkeypatch.setattr(warm_start, "_opened", ("", ()))
    monkeypatch.setattr(warm_start, "_importing", None)
    yield
    warm_start.wait()
    wait_for_hints()  # none goes on into the next test


@pytest.fixture
def probe_module(tmp_path, monkeypatch) -> str:
    """A module that is on sys.path but not imported yet."""
    (tmp_path / f"{PROBE_MODULE}.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield PROBE_MODULE
    sys.modules.pop(PROBE_MODULE, None)


@pytest.fixture
def connected_to(monkeypatch):
    def write(backend: str) -> None:
        directory = Path(os.environ["CORSO_CONFIG_DIR"])
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "corso.toml").write_text(
            f'[connection]\nbackend = "{backend}"\nrepository_id = "r"\n')
    return write


def record_path() -> Path:
    return Path(os.environ["CORSO_CACHE_DIR"]) / warm_start.RECORD


def note(command: str, backend: str, preload: list[str], files: list[str]) -> None:
    record_path().parent.mkdir(parents=True, exist_ok=True)
    record_path().write_text(json.dumps(
        {command: {"backend": backend, "preload": preload, "files": files}}))


def wait_for_hints() -> None:
    for thread in threading.enumerate():
        if thread.name == "corso-warm-files":
            thread.join()


@pytest.mark.parametrize("argv, words", [
    (["restore", "files", "--backup", "b1"], "restore files"),
    (["backup", "create", "files", "--path", "p"], "backup create files"),
    (["repo", "status"], "repo status"),
    (["--json", "backup", "list", "files"], None),  # a flag first: no words to go by
    (["restore", "files", "--help"], None),
    (["backup", "list", "files", "--config-file=other.toml"], None),
    ([], None),
])
def test_the_command_words_are_those_before_the_first_flag(argv, words):
    assert warm_start.command_words(argv) == words


def test_a_completed_command_is_noted_and_its_next_run_imports_the_preload(
        probe_module, connected_to):
    connected_to("memory")
    warm_start.begin(["backup", "list", "files"])  # nothing noted yet: nothing begun
    assert warm_start._importing is None
    warm_start.opened("memory", (probe_module,))
    warm_start.remember()
    noted = json.loads(record_path().read_text())["backup list files"]
    assert noted["backend"] == "memory" and noted["preload"] == [probe_module]
    assert {warm_start.__spec__.cached, warm_start.__file__} & set(noted["files"])  # for one

    warm_start.begin(["backup", "list", "files"])
    warm_start.wait()
    assert sys.modules[probe_module].LOADED


def test_the_preload_is_not_imported_for_a_command_on_another_backend(probe_module,
                                                                    connected_to):
    connected_to("filesystem")
    note("backup list files", "memory", [probe_module], [])
    warm_start.begin(["backup", "list", "files"])
    warm_start.wait()
    assert probe_module not in sys.modules


def test_a_command_not_noted_yet_takes_the_preload_of_another_on_its_backend(probe_module,
                                                                           connected_to):
    """The first backup after `repo init`, say."""
    connected_to("s3")
    record_path().parent.mkdir(parents=True, exist_ok=True)
    record_path().write_text(json.dumps({
        "repo init s3": {"backend": "s3", "preload": [probe_module], "files": []},
        "repo init filesystem": {"backend": "filesystem", "preload": ["not.imported"],
                                 "files": []}}))
    warm_start.begin(["backup", "create", "files", "--path", "p"])
    warm_start.wait()
    assert sys.modules[probe_module].LOADED
    assert "not.imported" not in sys.modules


def test_the_noted_files_are_hinted_and_those_gone_are_passed_over(tmp_path, connected_to,
                                                                  monkeypatch):
    connected_to("filesystem")
    present = [tmp_path / "a.pyc", tmp_path / "b.so"]
    for path in present:
        path.write_bytes(b"x" * 10)
    note("restore files", "filesystem", [], [str(present[0]), str(tmp_path / "gone"),
                                             str(present[1])])
    other = json.loads(record_path().read_text()) | {"backup list files": {
        "backend": "filesystem", "preload": [], "files": [str(present[1]), str(present[0])]}}
    record_path().write_text(json.dumps(other))  # the same files, hinted once
    hinted = []
    advise = os.posix_fadvise

    def recording(fd, offset, length, advice):
        hinted.append((os.readlink(f"/proc/self/fd/{fd}"), advice))
        advise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    warm_start.begin(["restore", "files", "--backup", "b"])
    wait_for_hints()
    assert hinted == [(str(path), os.POSIX_FADV_WILLNEED) for path in present]


@pytest.mark.parametrize("damage", [
    "not json",
    '["a list"]',
    '{"restore files": {"backend": "s3", "preload": "botocore.session", "files": []}}',
    '{"restore files": {"backend": 3, "preload": [], "files": []}}',
    '{"restore files": {"backend": "s3", "preload": [], "files": [1]}}',
])
def test_a_damaged_note_begins_nothing_and_is_replaced(damage, connected_to):
    connected_to("s3")
    record_path().parent.mkdir(parents=True, exist_ok=True)
    record_path().write_text(damage)
    warm_start.begin(["restore", "files"])
    assert warm_start._importing is None
    assert not any(t.name.startswith("corso-warm") for t in threading.enumerate())
    warm_start.opened("s3", ("botocore.session",))
    warm_start.remember()
    assert json.loads(record_path().read_text())["restore files"]["preload"] == [
        "botocore.session"]


def test_a_note_that_says_the_same_is_not_rewritten(connected_to):
    connected_to("filesystem")
    warm_start.begin(["backup", "list", "files"])
    warm_start.opened("filesystem", ())
    warm_start.remember()
    written = record_path().stat()
    noted = json.loads(record_path().read_text())
    noted["backup list files"]["files"].reverse()  # imported in another order: no news
    record_path().write_text(json.dumps(noted))
    written = record_path().stat()
    warm_start.begin(["backup", "list", "files"])
    warm_start.opened("filesystem", ())
    warm_start.remember()
    assert record_path().stat().st_mtime_ns == written.st_mtime_ns
    warm_start.opened("s3", ("botocore.session",))  # news: rewritten
    warm_start.remember()
    assert json.loads(record_path().read_text())["backup list files"]["backend"] == "s3"


def test_the_storage_opens_only_once_the_preload_is_imported(tmp_path, corso, monkeypatch):
    (tmp_path / "slow_probe.py").write_text("import time\ntime.sleep(0.3)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_probe", raising=False)
    assert corso("repo", "init", "filesystem", "--path", str(tmp_path / "repo"),
                 "--passphrase", "pw").code == 0
    note("backup list files", "filesystem", ["slow_probe"], [])
    seen_at_open = []
    backend = plugins.backend

    def noting_the_open(name):
        found = backend(name)

        def open_storage(values):
            seen_at_open.append(getattr(sys.modules.get("slow_probe"), "DONE", False))
            return found.open(values)

        return dataclasses.replace(found, open=open_storage)

    monkeypatch.setattr(plugins, "backend", noting_the_open)
    warm_start.begin(["backup", "list", "files"])
    assert warm_start._importing is not None
    assert corso("backup", "list", "files", "--passphrase", "pw").code == 0
    assert seen_at_open == [True]
    sys.modules.pop("slow_probe", None)


def test_only_the_latest_notes_are_kept(connected_to):
    connected_to("filesystem")
    for number in range(warm_start.KEPT_NOTES + 2):
        warm_start.begin(["backup", "details", f"n{number}"])
        warm_start.opened("filesystem", ())
        warm_start.remember()
    kept = list(json.loads(record_path().read_text()))
    assert kept == [f"backup details n{number}" for number in
                    reversed(range(2, warm_start.KEPT_NOTES + 2))]


def test_a_run_that_did_not_begin_notes_nothing():
    """main() called in a process of its own (tests, embedding) is no console script's run."""
    warm_start.opened("filesystem", ())
    warm_start.remember()
    assert not record_path().exists()


def test_the_console_script_notes_a_completed_command_and_not_a_failed_one(tmp_path):
    repository = tmp_path / "repo"
    init = run_subprocess("repo", "init", "filesystem", "--path", str(repository),
                          "--passphrase", "pw")
    assert init.code == 0, init
    assert run_subprocess("backup", "list", "files", "--passphrase", "pw").code == 0
    assert run_subprocess("backup", "details", "files", "--backup", "nope",
                          "--passphrase", "pw").code != 0
    record = json.loads(record_path().read_text())
    assert set(record) == {"repo init filesystem", "backup list files"}
    assert record["repo init filesystem"]["backend"] == "filesystem"
    listed = record["backup list files"]
    assert listed["backend"] == "filesystem" and listed["preload"] == []
    assert any(path.endswith(".so") for path in listed["files"])  # the native libraries too
    assert all(os.path.isabs(path) for path in listed["files"])


PRELOAD_ALONE = """
import importlib, sys
for name in {modules!r}:
    importlib.import_module(name)
print(" ".join(name for name in sys.modules if name.split(".")[0].startswith("corso")))
"""


@pytest.mark.parametrize("backend", sorted(plugins.backends()))
def test_a_backends_preload_imports_nothing_of_corso(backend):
    """The rule StorageBackend.preload states: its modules run beside corso's own imports."""
    modules = plugins.backends()[backend].preload
    done = subprocess.run([sys.executable, "-c", PRELOAD_ALONE.format(modules=modules)],
                          capture_output=True, text=True, check=True, cwd="/")
    assert done.stdout.split() == []
    for name in modules:  # and each one is there to be imported
        assert subprocess.run([sys.executable, "-c", f"import {name}"], cwd="/").returncode == 0
