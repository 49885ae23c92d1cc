"""Start-up and exit cost: every corso command pays for what its CLI imports, so heavy libraries
that only some commands use (boto3 for S3, test tools) are imported when those commands run; and
the console script leaves without the interpreter's teardown (main.run), losing no output."""

import gc
import io
import json
import signal
import subprocess
import sys

import pytest

from corso_core.cli import backup as cli_backup
from corso_core.cli import connection, stopping
from corso_core.cli import main as cli_main
from tests.cli_fixtures import CORSO, one_error_line, run_subprocess

HEAVY = ("boto3", "botocore", "rich", "hypothesis", "pytest")

PROBE = """
import sys
from corso_core.cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
print(" ".join(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


@pytest.mark.parametrize("argv", [["--help"], ["backup", "create", "files", "--help"],
                                  ["restore", "files", "--help"]])
def test_cli_start_up_does_not_import_heavy_libraries(argv):
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)],
                          capture_output=True, text=True, check=True)
    imported = set(done.stdout.split())
    assert "corso_s3" in imported  # the S3 backend is registered, just not its client
    assert imported.isdisjoint(HEAVY), imported & set(HEAVY)


def test_a_command_loads_only_its_own_command_module():
    """The root group imports a command's module when that command runs (cli/main.py)."""
    probe = PROBE.replace('name.split(".")[0] for name', "name for name")
    done = subprocess.run([sys.executable, "-c", probe.format(argv=["backup", "create", "files",
                                                                     "--help"])],
                          capture_output=True, text=True, check=True)
    imported = set(done.stdout.split())
    assert "corso_core.cli.backup" in imported
    assert imported.isdisjoint({"corso_core.cli.repo", "corso_core.cli.upkeep",
                                "corso_core.cli.restore", "corso_core.engine.restore",
                                "corso_core.upkeep.maintenance"})


def test_the_console_script_prints_its_whole_result():
    done = run_subprocess("plugins", "--json")
    assert done.code == 0, done
    names = {row["name"] for row in json.loads(done.out)}
    assert {"files", "filesystem", "s3"} <= names


def test_run_flushes_the_standard_streams_before_leaving(monkeypatch):
    """os._exit drops whatever a buffered stream still holds: run() flushes both first, then
    leaves with main()'s exit code."""
    events = []

    class Stream(io.StringIO):
        def flush(self):
            events.append(("flush", self.getvalue()))

    def fake_main(key_begun):
        print("unflushed", end="")
        sys.exit(3)

    monkeypatch.setattr(sys, "stdout", Stream())
    monkeypatch.setattr(sys, "stderr", Stream())
    monkeypatch.setattr(cli_main, "main", fake_main)
    monkeypatch.setattr(cli_main.os, "_exit", lambda code: events.append(("exit", code)))
    # What run() sets for its whole process stays out of pytest's: its signal handlers (pytest's
    # own Ctrl-C, pytest-timeout's SIGALRM) and unraisable hook; and the GIL's switch interval.
    monkeypatch.setattr(cli_main.sys, "setswitchinterval", lambda interval: None)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    handlers = {signum: signal.getsignal(signum) for signum in stopping.HANDLED}
    try:
        cli_main.run()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert events[-1] == ("exit", 3)
    assert ("flush", "unflushed") in events[:-1]


#: The console script's command, telling the GIL's switch interval it runs with.
SWITCH_INTERVAL = """
import sys
from corso_core.cli import launch, main as cli_main

def telling_main(key_begun):
    print(sys.getswitchinterval())
    raise SystemExit(0)

cli_main.main = telling_main
launch.run()
"""


def test_the_console_script_passes_the_gil_on_every_millisecond():
    done = subprocess.run([sys.executable, "-c", SWITCH_INTERVAL], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "0.001\n"), done.stderr


#: A SIGTERM that arrives just as main() has returned, while run() reads its exit code.
LATE_SIGNAL = """
import os, signal
from corso_core.cli import main as cli_main
from corso_core.cli import stopping

class Done(SystemExit):
    @property
    def code(self):
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

def finished_main(key_begun):
    raise Done()

cli_main.main = finished_main
cli_main.run()
"""


def test_a_signal_as_the_command_ends_is_no_traceback():
    done = subprocess.run([sys.executable, "-c", LATE_SIGNAL], capture_output=True, text=True,
                          timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stderr) in {(0, ""), (143, "corso: terminated (SIGTERM)\n")}


#: The console script, told `signum` as the CLI's main module starts to load.
SIGNAL_WHILE_LOADING = """
import importlib.abc, os, sys
class SignalOnLoad(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "corso_core.cli.main":
            os.kill(os.getpid(), {signum})
        return None
sys.meta_path.insert(0, SignalOnLoad())
sys.argv = ["corso", "--version"]
from corso_core.cli.launch import run
run()
"""


@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGINT, 130, "corso: interrupted\n"),
    (signal.SIGTERM, 143, "corso: terminated (SIGTERM)\n"),
    (signal.SIGHUP, 129, "corso: terminated (SIGHUP)\n")])
def test_a_signal_while_the_cli_loads_ends_it_with_its_line(signum, status, line):
    """Before main.run installed its handlers (~0.1 s of imports), Ctrl-C was a traceback
    from inside an import, and SIGTERM or SIGHUP ended corso without a word."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_LOADING.format(signum=signum)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (status, "", line)


def test_a_hangup_ignored_by_nohup_stays_ignored_while_the_cli_loads():
    done = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_LOADING.format(
        signum=signal.SIGHUP)], capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert done.returncode == 0 and done.stdout.startswith("corso, version"), done


def test_the_console_script_keeps_the_exit_code_of_an_error(tmp_path):
    done = run_subprocess("backup", "list", "files", "--config-file",
                          str(tmp_path / "none.toml"))
    one_error_line(done, 1, "no repository connected")


def test_a_reader_that_goes_away_early_gets_no_traceback():
    """`corso --help | head -1`: the flush at exit finds the pipe closed."""
    shell = subprocess.run(f"'{CORSO}' --help | head -c 1", shell=True, capture_output=True,
                           text=True, timeout=60)
    assert shell.stdout == "U"
    assert "Traceback" not in shell.stderr and "Exception" not in shell.stderr, shell.stderr


def test_the_objects_made_while_opening_the_repository_are_kept_out_of_collections(
        tmp_path, corso, monkeypatch):
    """The cyclic collector is paused while a command opens its repository (boto3's models
    for S3) and what exists then is frozen; the command itself runs with it back on."""
    repo = tmp_path / "repo"
    assert corso("repo", "init", "filesystem", "--path", str(repo), "--passphrase", "pw").code == 0
    seen = {}
    open_connected, list_manifests = connection.open_connected, cli_backup.list_manifests

    def opening(*args, **kwargs):
        seen["collector while opening"] = gc.isenabled()
        return open_connected(*args, **kwargs)

    def listing(repository, **options):
        seen["collector in the command"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count()
        return list_manifests(repository, **options)

    monkeypatch.setattr(connection, "open_connected", opening)
    monkeypatch.setattr(cli_backup, "list_manifests", listing)
    gc.unfreeze()
    assert corso("backup", "list", "files", "--passphrase", "pw").code == 0
    assert seen["collector while opening"] is False
    assert seen["collector in the command"] is True
    assert seen["frozen"] > 10_000  # modules, click, the repository's objects
