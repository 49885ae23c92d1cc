"""`corso repo init|connect|status|update-passphrase` through the CLI, and every bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import pytest
from cli_fixtures import CORSO, Result, one_error_line, run_subprocess

from corso_core import config
from corso_core.cli.connection import storage_values
from corso_core.errors import UsageError
from corso_core.repo.format import FORMAT_COPY_KEY, FORMAT_KEY, FORMAT_VERSION, TEST_CHEAP_KDF_ENV
from corso_core.storage.backend import StorageBackend
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.storage.kill_switch import KILL_AFTER_WRITES_ENV


def snapshot(root: Path) -> dict:
    """Every file under root with its bytes and mtime: 'nothing written' means this is equal."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def config_file() -> Path:
    return Path(os.environ["CORSO_CONFIG_DIR"]) / "corso.toml"


@pytest.fixture
def repo(tmp_path, corso) -> Path:
    path = tmp_path / "repo"
    assert corso("repo", "init", "filesystem", "--path", str(path), "--passphrase", "pw").code == 0
    return path


# --- init, connect, status ----------------------------------------------------------------


def test_init_creates_the_repository_and_saves_the_connection(tmp_path, corso, config_file):
    path = tmp_path / "new" / "repo"
    result = corso("repo", "init", "filesystem", "--path", str(path), "--passphrase", "s3cret!")
    assert result.code == 0 and "created" in result.out and result.err == ""
    assert sorted(os.listdir(path)) == [FORMAT_KEY, FORMAT_COPY_KEY]
    saved = config.load(str(config_file))
    assert saved.backend == "filesystem" and saved.settings == {"path": str(path)}
    assert saved.repository_id in result.out
    assert b"s3cret!" not in config_file.read_bytes()


def test_init_of_a_second_repository_says_which_connection_it_replaced(tmp_path, corso,
                                                                         config_file):
    """A scheduled backup using the same corso.toml goes to the new repository from now on:
    init said only "Connection saved"."""
    first = corso("repo", "init", "filesystem", "--path", str(tmp_path / "one"), "--passphrase",
                  "pw", "--json")
    assert json.loads(first.out)["replaced_repository_id"] is None
    old_id = json.loads(first.out)["repository_id"]
    again = corso("repo", "init", "filesystem", "--path", str(tmp_path / "one"), "--passphrase",
                  "pw")
    assert "in place of" not in again.out  # the same repository: nothing replaced
    second = corso("repo", "init", "filesystem", "--path", str(tmp_path / "two"), "--passphrase",
                   "pw")
    assert second.code == 0, second
    assert (f"Connection saved in {config_file}, in place of the one to repository {old_id}: "
            "commands using that file now use this repository.") in second.out
    second_id = config.load(str(config_file)).repository_id
    back = corso("repo", "connect", "filesystem", "--path", str(tmp_path / "one"),
                 "--passphrase", "pw", "--json")
    assert json.loads(back.out)["replaced_repository_id"] == second_id != old_id


def test_init_with_a_relative_path_saves_it_absolute(tmp_path, corso, config_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert corso("repo", "init", "filesystem", "--path", "rel", "--passphrase", "pw").code == 0
    assert config.load(str(config_file)).settings == {"path": str(tmp_path / "rel")}


def test_init_again_with_the_same_passphrase_succeeds_and_says_so(repo, corso):
    before = snapshot(repo)
    result = corso("repo", "init", "filesystem", "--path", str(repo), "--passphrase", "pw",
                   "--json")
    assert result.code == 0 and json.loads(result.out)["created"] is False
    text = corso("repo", "init", "filesystem", "--path", str(repo), "--passphrase", "pw")
    assert "already exists" in text.out
    assert snapshot(repo) == before


def test_init_again_with_another_passphrase_fails_naming_the_location(repo, corso, config_file):
    before, saved = snapshot(repo), config_file.read_bytes()
    result = corso("repo", "init", "filesystem", "--path", str(repo), "--passphrase", "other")
    one_error_line(result, 1, "already exists", str(repo))
    assert snapshot(repo) == before and config_file.read_bytes() == saved


def test_status_shows_backend_location_id_version_blobs_and_requests(repo, corso, config_file):
    repository_id = config.load(str(config_file)).repository_id
    text = corso("repo", "status", "--passphrase", "pw")
    assert text.code == 0
    for expected in ("filesystem", str(repo), repository_id, f"format version: {FORMAT_VERSION}",
                     "key derivation: scrypt n=1024 r=8 p=1 (test-only strength"):
        assert expected in text.out
    data = json.loads(corso("repo", "status", "--passphrase", "pw", "--json").out)
    sizes = [os.path.getsize(repo / name) for name in (FORMAT_KEY, FORMAT_COPY_KEY)]
    assert data["blobs"] == 2 and data["bytes"] == sum(sizes)
    # The kinds add up to the whole: the two format blobs are "other".
    assert data["blobs_by_kind"]["other"] == {"objects": 2, "bytes": sum(sizes)}
    assert sum(kind["objects"] for kind in data["blobs_by_kind"].values()) == data["blobs"]
    assert f"  other:        2 ({sum(sizes)} bytes)" in text.out
    assert (data["backend"], data["location"], data["repository_id"]) == (
        "filesystem", str(repo), repository_id)
    assert data["format_version"] == FORMAT_VERSION
    assert data["storage_requests"]["requests"]["GET"] >= 1
    assert data["storage_requests"]["requests"]["LIST"] == 1
    assert data["kdf"] == {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
    # the scheme of the chunker's seed, never the seed (secret: derived from the master key)
    assert data["chunker"]["seed"] == "keyed-v1"
    assert set(data["chunker"]) == {"algorithm", "min_size", "avg_size", "max_size", "seed"}


def test_global_flags_work_before_the_command_name(repo, corso):
    result = corso("--json", "repo", "status", "--passphrase", "pw")
    assert json.loads(result.out)["blobs"] == 2


def test_passphrase_from_the_environment(repo, corso, monkeypatch):
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    assert corso("repo", "status").code == 0
    monkeypatch.setenv("CORSO_PASSPHRASE", "nope")
    one_error_line(corso("repo", "status"), 1, "invalid passphrase")
    assert corso("repo", "status", "--passphrase", "pw").code == 0  # the flag wins


def test_connect_from_another_machine_then_status_needs_no_flags(repo, corso, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "second-machine"))
    result = corso("repo", "connect", "filesystem", "--path", str(repo), "--passphrase", "pw")
    assert result.code == 0 and "Connected" in result.out
    assert corso("repo", "status", "--passphrase", "pw").code == 0


def test_a_symlinked_config_file_stays_a_symlink(repo, corso, tmp_path, config_file):
    real = tmp_path / "dotfiles" / "corso.toml"
    real.parent.mkdir()
    config_file.rename(real)
    config_file.symlink_to(real)
    assert corso("repo", "connect", "filesystem", "--path", str(repo), "--passphrase",
                 "pw").code == 0
    assert config_file.is_symlink() and config.load(str(real)).settings["path"] == str(repo)


def test_connect_replaces_the_config_only_after_the_new_repository_opens(
    repo, corso, tmp_path, config_file
):
    other = tmp_path / "other"
    FilesystemStorage(str(other))  # nothing yet
    saved = config_file.read_bytes()
    one_error_line(corso("repo", "connect", "filesystem", "--path", str(other),
                         "--passphrase", "pw"), 1, "no corso repository", str(other))
    assert config_file.read_bytes() == saved and not other.exists()
    # a second repository, made from another config, with another passphrase
    corso("repo", "init", "filesystem", "--path", str(other), "--passphrase", "pw2",
          "--config-file", str(tmp_path / "elsewhere.toml"))
    one_error_line(corso("repo", "connect", "filesystem", "--path", str(other),
                         "--passphrase", "pw"), 1, "invalid passphrase")
    assert config_file.read_bytes() == saved
    assert corso("repo", "connect", "filesystem", "--path", str(other),
                 "--passphrase", "pw2").code == 0
    assert config.load(str(config_file)).settings == {"path": str(other)}


def test_config_file_flag_overrides_the_config_dir(tmp_path, corso, config_file):
    chosen = tmp_path / "chosen.toml"
    assert corso("repo", "init", "filesystem", "--path", str(tmp_path / "r"), "--passphrase",
                 "pw", "--config-file", str(chosen)).code == 0
    assert chosen.exists() and not config_file.exists()
    assert corso("repo", "status", "--passphrase", "pw", "--config-file", str(chosen)).code == 0
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1, "no repository connected")


def test_a_matching_storage_flag_is_accepted(repo, corso):
    assert corso("repo", "status", "--passphrase", "pw", "--path", str(repo)).code == 0


def test_a_differing_storage_flag_fails_naming_both_values(repo, corso, tmp_path):
    result = corso("repo", "status", "--passphrase", "pw", "--path", str(tmp_path / "x"))
    one_error_line(result, 2, f"--path {tmp_path / 'x'}", str(repo))


def test_a_repository_replaced_behind_the_config_is_refused(repo, corso, tmp_path, config_file):
    old_id = config.load(str(config_file)).repository_id
    for name in os.listdir(repo):
        os.unlink(repo / name)
    corso("repo", "init", "filesystem", "--path", str(repo), "--passphrase", "pw",
          "--config-file", str(tmp_path / "other.toml"))
    new_id = config.load(str(tmp_path / "other.toml")).repository_id
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1, old_id, new_id)


def test_secret_flags_reach_the_backend_but_other_backends_flags_are_refused():
    backend = StorageBackend(
        name="vault", description="test",
        options=[click.Option(["--bucket"]), click.Option(["--secret-key"]),
                 click.Option(["--lock-days"])],
        secret_options=frozenset({"secret_key"}), init_only=frozenset({"lock_days"}),
        open=lambda values: None,
    )
    connection = config.Connection("vault", "id", {"bucket": "b"})
    opened = storage_values(backend, connection, {"secret_key": "k", "bucket": "b"})
    assert opened == {"bucket": "b", "secret_key": "k", "lock_days": None}
    with pytest.raises(UsageError, match="--path is an option of backend filesystem, but the "
                                         "connected repository is on vault"):
        storage_values(backend, connection, {"path": "/x"})


#: A command with its own --path (as restore has), run as a user would: its stderr must stay clean.
PROBE = """
import click, sys
from corso_core.cli.connection import uses_repository

@click.command()
@click.option("--path", multiple=True, help="A glob, as in restore.")
@uses_repository
def probe(repository, path):
    click.echo(f"{path} {repository.repository_id}")

probe.main(sys.argv[1:])
"""


def test_a_command_option_spelled_like_a_storage_flag_takes_precedence(repo, config_file):
    def probe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                              text=True, timeout=60)

    ran = probe("--path", "*.txt", "--passphrase", "pw")
    repository_id = config.load(str(config_file)).repository_id
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, f"('*.txt',) {repository_id}\n", "")
    shown = probe("--help")
    assert shown.stdout.count("--path") == 1 and shown.stderr == ""


# --- update-passphrase ----------------------------------------------------------------------


def test_update_passphrase_rewrites_only_the_format_blobs(repo, corso):
    storage = FilesystemStorage(str(repo))
    for key in ("data/ab/ab01", "index/i1", "manifests/m1"):
        storage.put(key, os.urandom(100))
    before = snapshot(repo)
    result = corso("repo", "update-passphrase", "--passphrase", "pw", "--new-passphrase", "pw2")
    assert result.code == 0, result
    after = snapshot(repo)
    assert set(after) == set(before)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {FORMAT_KEY, FORMAT_COPY_KEY}
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1, "invalid passphrase")
    assert corso("repo", "status", "--passphrase", "pw2").code == 0


def test_update_passphrase_under_the_test_kdf_warns_of_a_weaker_key(tmp_path, corso,
                                                                     monkeypatch):
    monkeypatch.delenv(TEST_CHEAP_KDF_ENV)  # a real repository's strength
    assert corso("repo", "init", "filesystem", "--path", str(tmp_path / "r"), "--passphrase",
                 "pw").code == 0
    monkeypatch.setenv(TEST_CHEAP_KDF_ENV, "1")
    weaker = corso("repo", "update-passphrase", "--passphrase", "pw", "--new-passphrase", "pw2")
    assert weaker.code == 0 and weaker.err.startswith(
        "corso: warning: CORSO_TEST_CHEAP_KDF=1 gave the new passphrase the test-only key "
        "derivation"), weaker
    again = corso("repo", "update-passphrase", "--passphrase", "pw2", "--new-passphrase", "pw3")
    assert again.code == 0 and again.err == ""  # test strength already: nothing weakened


@pytest.mark.parametrize("next_passphrase", ["pw2", "pw"])
def test_update_passphrase_killed_between_its_writes_is_settled_by_the_next_command(
        repo, next_passphrase):
    """SIGKILL as update-passphrase starts its second write (format, after format-copy)."""
    time.sleep(0.05)  # the change comes later than init on the storage's clock, as in life
    killed = run_subprocess("repo", "update-passphrase", "--passphrase", "pw",
                            "--new-passphrase", "pw2", env={KILL_AFTER_WRITES_ENV: "1"})
    assert killed.code == -signal.SIGKILL
    assert (repo / FORMAT_KEY).read_bytes() != (repo / FORMAT_COPY_KEY).read_bytes()
    # The repair is said on stderr as a warning, even when a log file gets the log.
    settled = run_subprocess("repo", "status", "--passphrase", next_passphrase,
                             "--log-file", str(repo.parent / "status.log"))
    assert settled.code == 0, settled
    assert settled.err.startswith("corso: warning: format blobs at"), settled.err
    assert settled.err.count("\n") == 1
    assert "WARNING" in (repo.parent / "status.log").read_text()
    assert (repo / FORMAT_KEY).read_bytes() == (repo / FORMAT_COPY_KEY).read_bytes()
    other = {"pw": "pw2", "pw2": "pw"}[next_passphrase]
    one_error_line(run_subprocess("repo", "status", "--passphrase", other), 1,
                   "invalid passphrase")


def test_update_passphrase_refuses_an_empty_new_passphrase(repo, corso):
    before = snapshot(repo)
    one_error_line(corso("repo", "update-passphrase", "--passphrase", "pw",
                         "--new-passphrase", ""), 2, "passphrase is empty")
    assert snapshot(repo) == before


def test_update_passphrase_to_the_same_one_changes_nothing(repo, corso):
    """It rewrote both blobs and said "the old one no longer opens it" of the one that did."""
    before = snapshot(repo)
    one_error_line(corso("repo", "update-passphrase", "--passphrase", "pw",
                         "--new-passphrase", "pw"), 2, "nothing was changed")
    assert snapshot(repo) == before


def test_update_passphrase_without_a_terminal_needs_the_flag(repo):
    result = run_subprocess("repo", "update-passphrase", "--passphrase", "pw")
    one_error_line(result, 2, "--new-passphrase")


# --- passphrase sources: terminal prompt, none at all -----------------------------------------


def test_no_passphrase_and_no_terminal_is_a_clear_error(tmp_path):
    result = run_subprocess("repo", "init", "filesystem", "--path", str(tmp_path / "r"))
    one_error_line(result, 2, "no passphrase", "--passphrase", "CORSO_PASSPHRASE")
    assert not (tmp_path / "r").exists()


def test_no_passphrase_and_stdin_closed_is_the_same_clear_error(tmp_path):
    """`<&-`: Python has no sys.stdin then, and asking it whether it is a terminal was a
    traceback."""
    env = {k: v for k, v in os.environ.items() if k != "CORSO_PASSPHRASE"}
    done = subprocess.run([CORSO, "repo", "init", "filesystem", "--path", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60, env=env,
                          preexec_fn=lambda: os.close(0))
    one_error_line(Result(done.returncode, done.stdout, done.stderr), 2, "no passphrase")
    assert not (tmp_path / "r").exists()


def _on_a_terminal(argv: list[str], answers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Run corso on a new terminal, typing each answer once its prompt shows: (exit status,
    all the terminal showed). One still waiting for input 30 s after the last answer (it asked
    again) is killed."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: corso on a terminal
        os.execv(CORSO, [CORSO, *argv])
    transcript = b""
    for prompt, answer in answers:
        while prompt not in transcript:
            transcript += os.read(fd, 1024)
        transcript = transcript.replace(prompt, b"(asked) ", 1)  # the same prompt may come again
        os.write(fd, answer + b"\n")
    deadline = time.monotonic() + 30
    while True:
        if not select.select([fd], [], [], max(0, deadline - time.monotonic()))[0]:
            os.kill(pid, signal.SIGKILL)
            break
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        transcript += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), transcript


def test_init_prompts_on_a_terminal_hidden_and_confirmed(tmp_path):
    code, transcript = _on_a_terminal(
        ["repo", "init", "filesystem", "--path", str(tmp_path / "r")],
        [(b"passphrase: ", b"typed secret"), (b"Repeat for confirmation: ", b"typed secret")])
    assert code == 0, transcript
    assert b"created" in transcript and b"typed secret" not in transcript  # never echoed
    storage = FilesystemStorage(str(tmp_path / "r"))
    from corso_core.repo.repository import open_repository

    assert open_repository(storage, "typed secret").repository_id


def test_init_stops_when_the_confirmation_differs(tmp_path, config_file):
    """click's own "Error: The two entered values do not match." was printed, not corso's
    one error line, and the prompt asked again."""
    code, transcript = _on_a_terminal(
        ["repo", "init", "filesystem", "--path", str(tmp_path / "r")],
        [(b"passphrase: ", b"typed secret"), (b"Repeat for confirmation: ", b"typo secret")])
    assert code == 2, transcript
    *_, last = transcript.decode().splitlines()
    assert last == ("corso: error: the passphrase typed again does not match the first; "
                    "nothing changed"), transcript
    assert b"Error: The two" not in transcript and b"secret" not in transcript
    assert not (tmp_path / "r").exists() and not config_file.exists()


# --- secrets never reach logs -----------------------------------------------------------------


def test_the_passphrase_never_reaches_the_debug_log(tmp_path, corso):
    log = tmp_path / "corso.log"
    corso("repo", "init", "filesystem", "--path", str(tmp_path / "r"), "--passphrase",
          "hunter2-secret", "--log-level", "debug", "--log-file", str(log))
    corso("repo", "status", "--passphrase", "wrong-hunter3", "--log-level", "debug",
          "--log-file", str(log))
    text = log.read_text()
    assert "created repository" in text and "read format blob" in text  # the log has content
    assert "hunter2-secret" not in text and "wrong-hunter3" not in text


# --- every bad input: one line on stderr, non-zero exit, nothing written ----------------------


def test_bad_missing_path(tmp_path, corso, config_file):
    one_error_line(corso("repo", "init", "filesystem", "--passphrase", "pw"), 2, "--path")
    assert not config_file.exists()


def test_bad_path_that_is_a_file(tmp_path, corso, config_file):
    target = tmp_path / "a-file"
    target.write_bytes(b"precious")
    one_error_line(corso("repo", "init", "filesystem", "--path", str(target), "--passphrase",
                         "pw"), 2, str(target), "is a file")
    assert target.read_bytes() == b"precious" and not config_file.exists()


#: Runs corso's main() as `nobody`: the interpreter lives under root's 0700 home, so it is
#: started as root, imports corso (every command's module: main loads them on first use), and
#: only then drops to uid/gid 65534.
AS_NOBODY = """
import importlib, os, sys
from corso_core.cli.main import COMMANDS, main
for where in COMMANDS.values():
    importlib.import_module(where.partition(":")[0])
os.setgroups([]); os.setgid(65534); os.setuid(65534)
main(sys.argv[1:])
"""


@pytest.fixture
def root_only_dir():
    """A directory everyone may enter and only root may write (outside pytest's 0700 tree)."""
    parent = Path(tempfile.mkdtemp(prefix="corso-root-only-"))
    os.chmod(parent, 0o755)
    yield parent
    shutil.rmtree(parent)


def test_bad_unwritable_path(root_only_dir):
    """Tests run as root, who may write anywhere; so this runs the CLI as an unprivileged user."""
    parent = root_only_dir
    (parent / "config").mkdir()
    os.chmod(parent / "config", 0o777)  # only the repository's place is unwritable
    env = {**os.environ, "CORSO_CONFIG_DIR": str(parent / "config")}

    def init(*prefix: str) -> Result:
        done = subprocess.run([*prefix, "repo", "init", "filesystem", "--path",
                               str(parent / "repo"), "--passphrase", "pw"],
                              capture_output=True, text=True, timeout=60, env=env)
        return Result(done.returncode, done.stdout, done.stderr)

    result = init(sys.executable, "-c", AS_NOBODY)
    one_error_line(result, 1, str(parent / "repo"), "permission denied")
    assert os.listdir(parent) == ["config"] and os.listdir(parent / "config") == []
    # the same command as root succeeds: the failure was the permission, nothing else
    assert init(sys.executable, "-c", AS_NOBODY.replace("os.setuid(65534)", "")).code == 0


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_bad_config_file_location_fails_before_init_creates_anything(tmp_path, corso, where):
    (tmp_path / "a-file").write_text("precious")
    (tmp_path / "a-dir").mkdir()
    target = {"under-a-file": tmp_path / "a-file" / "corso.toml",
              "a-directory": tmp_path / "a-dir"}[where]
    for command in ("init", "connect"):
        one_error_line(corso("repo", command, "filesystem", "--path", str(tmp_path / "repo"),
                             "--passphrase", "pw", "--config-file", str(target)),
                       1, f"cannot write config file {target}")
    assert not (tmp_path / "repo").exists()
    assert (tmp_path / "a-file").read_text() == "precious"
    assert not any((tmp_path / "a-dir").iterdir())


def test_bad_unwritable_config_dir_fails_before_init_creates_anything(root_only_dir):
    """As `nobody`: the repository's directory is writable, the config's is not."""
    (root_only_dir / "open").mkdir()
    os.chmod(root_only_dir / "open", 0o777)
    repo = root_only_dir / "open" / "repo"
    done = subprocess.run([sys.executable, "-c", AS_NOBODY, "repo", "init", "filesystem",
                           "--path", str(repo), "--passphrase", "pw"], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "CORSO_CONFIG_DIR": str(root_only_dir / "config")})
    one_error_line(Result(done.returncode, done.stdout, done.stderr), 1,
                   f"cannot write config file {root_only_dir / 'config' / 'corso.toml'}",
                   "not writable")
    assert os.listdir(root_only_dir) == ["open"] and not repo.exists()


def test_a_config_file_that_fails_only_when_written_undoes_the_init(tmp_path, corso):
    """/proc/version passes the check made before init (its directory is "writable") and
    fails when written: the repository was made and left behind, unconnected."""
    repo = tmp_path / "repo"
    one_error_line(corso("repo", "init", "filesystem", "--path", str(repo), "--passphrase",
                         "pw", "--config-file", "/proc/version"), 1,
                   "cannot write config file /proc/version", "the repository was not created")
    assert not repo.exists() or list(repo.rglob("*")) == []


def test_bad_init_into_a_directory_holding_other_files(tmp_path, corso, config_file):
    target = tmp_path / "documents"
    target.mkdir()
    (target / "thesis.txt").write_text("precious")
    before = snapshot(target)
    one_error_line(corso("repo", "init", "filesystem", "--path", str(target), "--passphrase",
                         "pw"), 2, f"{target} is not empty and holds no corso repository",
                   "thesis.txt")
    assert snapshot(target) == before and not config_file.exists()


@pytest.mark.parametrize("leftover", [None, ".format.tmp-0123456789ab"],
                         ids=["empty", "temp-file-of-a-killed-init"])
def test_init_into_an_empty_directory(tmp_path, corso, leftover):
    target = tmp_path / "empty"
    target.mkdir()
    if leftover:
        (target / leftover).write_bytes(b"half")
    assert corso("repo", "init", "filesystem", "--path", str(target), "--passphrase",
                 "pw").code == 0
    assert {FORMAT_KEY, FORMAT_COPY_KEY} <= set(os.listdir(target))


def test_bad_empty_passphrase(tmp_path, corso, config_file, monkeypatch):
    one_error_line(corso("repo", "init", "filesystem", "--path", str(tmp_path / "r"),
                         "--passphrase", ""), 2, "passphrase is empty")
    monkeypatch.setenv("CORSO_PASSPHRASE", "")
    one_error_line(corso("repo", "init", "filesystem", "--path", str(tmp_path / "r")), 2,
                   "passphrase is empty")
    assert not (tmp_path / "r").exists() and not config_file.exists()


def test_bad_wrong_passphrase(repo, corso, config_file):
    before, saved = snapshot(repo), config_file.read_bytes()
    for command in (("repo", "status"), ("repo", "connect", "filesystem", "--path", str(repo))):
        one_error_line(corso(*command, "--passphrase", "wrong"), 1, "invalid passphrase")
    assert snapshot(repo) == before and config_file.read_bytes() == saved


def test_bad_corrupted_format_blob(repo, corso, config_file):
    blob = bytearray((repo / FORMAT_KEY).read_bytes())
    blob[-30] ^= 0x04
    (repo / FORMAT_KEY).write_bytes(bytes(blob))
    before, saved = snapshot(repo), config_file.read_bytes()
    for command in (("repo", "status"), ("repo", "connect", "filesystem", "--path", str(repo))):
        one_error_line(corso(*command, "--passphrase", "pw"), 1,
                       f"format blob {FORMAT_KEY} is corrupted", str(repo), "README")
    assert snapshot(repo) == before and config_file.read_bytes() == saved


def test_bad_newer_format_version(repo, corso):
    from test_format import rewrite_body

    rewrite_body(FilesystemStorage(str(repo)), lambda body: body.update(format_version=99))
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1, "version 99",
                   f"version {FORMAT_VERSION}")


@pytest.mark.parametrize(
    "content",
    [b'[connection]\nbackend = "filesystem"\nrepository_id = "0e4f', b"\x00\x01garbage",
     b'[connection]\nbackend = "filesystem"\n',
     b'[connection]\nbackend = "filesystem"\nrepository_id = "ID"\n',
     b'[connection]\nbackend = "filesystem"\nrepository_id = "ID"\n'
     b"[connection.settings]\npath = 5\n",
     b'[connection]\nbackend = "filesystem"\nrepository_id = "ID"\n'
     b'[connection.settings]\npath = "/tmp/r\\u0000"\n'],
    ids=["truncated", "binary", "missing-keys", "no-settings", "a-number-for-a-path",
         "a-nul-in-the-path"],
)
def test_bad_config_file(repo, corso, config_file, content):
    saved = config.load(str(config_file))
    content = content.replace(b'"ID"', f'"{saved.repository_id}"'.encode())
    config_file.write_bytes(content)
    before = snapshot(repo)
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1, str(config_file),
                   "corso repo connect")
    assert config_file.read_bytes() == content and snapshot(repo) == before
    # connect repairs it
    assert corso("repo", "connect", "filesystem", "--path", str(repo), "--passphrase",
                 "pw").code == 0


@pytest.mark.parametrize("path, message", [
    ("", "--path must not be empty"),
    ("r\udcff", "is not valid UTF-8"),
    ("r\0", "--path must not contain a NUL"),
], ids=["empty", "not-utf-8", "nul"])
def test_bad_repository_path_that_corso_toml_could_not_keep(tmp_path, corso, config_file,
                                                           monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    one_error_line(corso("repo", "init", "filesystem", "--path", path, "--passphrase", "pw"),
                   2, message)
    assert os.listdir(tmp_path) == [] and not config_file.exists()


def test_bad_init_inside_another_repository(repo, corso, config_file):
    saved, before = config_file.read_bytes(), snapshot(repo)
    for inner in (repo / "data", repo / "nested" / "deeper"):
        one_error_line(corso("repo", "init", "filesystem", "--path", str(inner), "--passphrase",
                             "pw"), 2, f"{inner} is inside the repository at {repo}")
    assert snapshot(repo) == before and config_file.read_bytes() == saved
    assert not (repo / "nested").exists()


def test_bad_passphrase_that_is_not_utf_8_is_refused_without_quoting_it(tmp_path, corso,
                                                                        monkeypatch):
    monkeypatch.setenv("CORSO_PASSPHRASE", "ab\udcffcd")
    result = corso("repo", "init", "filesystem", "--path", str(tmp_path / "r"))
    one_error_line(result, 2, "the passphrase is not valid UTF-8")
    assert "ab" not in result.err and not (tmp_path / "r").exists()


def test_a_backend_not_installed_names_the_config_file(repo, corso, config_file):
    """As any backend not installed, exit 2; the config file named, as any broken one."""
    saved = config.load(str(config_file))
    config_file.write_text(f'[connection]\nbackend = "nope"\nrepository_id = '
                           f'"{saved.repository_id}"\n[connection.settings]\n')
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 2, str(config_file),
                   'unknown backend "nope"', "corso repo connect")


@pytest.mark.parametrize("where", ["missing-dir/x.log", "a-file/x.log", "."],
                         ids=["missing-directory", "through-a-file", "a-directory"])
def test_bad_log_file_that_cannot_be_opened(repo, corso, tmp_path, where):
    (tmp_path / "a-file").write_bytes(b"x")
    one_error_line(corso("--log-file", str(tmp_path / where), "repo", "status", "--passphrase",
                         "pw"), 2, "cannot open --log-file")


def test_a_log_file_that_cannot_be_written_is_said_once_not_as_tracebacks(repo, corso):
    result = corso("--log-file", "/dev/full", "--log-level", "debug", "repo", "status",
                   "--passphrase", "pw")
    assert result.code == 0 and "Traceback" not in result.err, result
    assert result.err.splitlines() == [
        "corso: warning: cannot write --log-file /dev/full: No space left on device"]


@pytest.mark.parametrize("flag", ["--config-file", "--log-file"])
def test_bad_empty_global_file_flag(repo, corso, config_file, flag):
    saved = config_file.read_bytes()
    one_error_line(corso(flag, "", "repo", "init", "filesystem", "--path", str(repo),
                         "--passphrase", "pw"), 2, flag, "must not be empty")
    assert config_file.read_bytes() == saved


def test_bad_connect_where_no_repository_is(tmp_path, corso, config_file):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(corso("repo", "connect", "filesystem", "--path", str(empty), "--passphrase",
                         "pw"), 1, "no corso repository", str(empty))
    assert os.listdir(empty) == [] and not config_file.exists()


def test_bad_no_connection_yet(corso, tmp_path):
    one_error_line(corso("repo", "status", "--passphrase", "pw"), 1,
                   "no repository connected (no config file ", "); run corso repo init or "
                   "corso repo connect")
    missing = tmp_path / "elsewhere.toml"  # the file named: a --config-file mistyped shows
    one_error_line(corso("repo", "status", "--passphrase", "pw", "--config-file", str(missing)),
                   1, f"no repository connected (no config file {missing})")


def test_a_passphrase_misplaced_on_the_command_line_is_not_echoed(tmp_path, corso):
    """`--path` given no value takes `--passphrase` for its own: the passphrase is then an
    extra argument, which click's error would quote."""
    result = corso("repo", "init", "filesystem", "--path", "--passphrase", "SeCrEt1", "a")
    one_error_line(result, 2, "unexpected extra arguments (*** a)")
    assert "SeCrEt1" not in result.err


def test_version_flag(corso):
    from corso_core import __version__

    for flag in ("-v", "--version"):
        result = corso(flag)
        assert result.code == 0 and result.out == f"corso, version {__version__}\n"


def test_help_and_version_that_stdout_cannot_take_are_one_error_line():
    """`corso --help > /dev/full` was click's traceback, for the root, a group, a command and
    a plugin's command alike."""
    for args in (["--help"], ["-v"], ["backup", "-h"], ["backup", "create", "files", "--help"],
                 ["repo", "init", "filesystem", "--help"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([CORSO, *args], stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=60)
        one_error_line(Result(done.returncode, "", done.stderr), 1,
                       "cannot print the result to stdout: No space left on device")


def test_a_group_without_its_command_shows_its_help_on_stderr(corso):
    """`corso backup` alone: its help, as click gives it, not prefixed `corso: error: Usage:`."""
    result = corso("backup")
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("Usage: corso backup [OPTIONS] COMMAND [ARGS]...\n")
    assert "  create " in result.err and "corso: error" not in result.err


def test_hide_progress_and_log_flags_are_accepted_by_repo_commands(repo, corso, tmp_path):
    log = tmp_path / "info.log"
    result = corso("repo", "status", "--passphrase", "pw", "--hide-progress", "--log-level",
                   "info", "--log-file", str(log))
    assert result.code == 0 and result.err == "" and log.exists()


def test_help_of_a_connected_command_shows_its_storage_flags_as_checks(corso):
    """`repo status --help` listed them last flag first, --path saying "init creates it"."""
    for argv in (["repo", "status"], ["backup", "list", "files"], ["repo", "repair"]):
        text = " ".join(corso(*argv, "--help").out.split())
        assert text.index("--path") < text.index("--passphrase"), argv
        assert ("--path TEXT Directory that holds the repository: optional here, only checked "
                "against the connection.") in text, argv
        assert "init" not in text.split("--path TEXT")[1].split("--")[0], argv
    repair = corso("repo", "repair", "--help").out
    assert repair.index("--read-data") < repair.index("--path")  # its own flags first


def test_a_plugin_storage_flag_without_help_still_gets_its_connected_copy():
    """A plugin may give a flag no help text: every command would fail building its copy."""
    import click

    from corso_core.cli.connection import _yielding_copy

    copy = _yielding_copy(click.Option(["--zone"]), checked=True)
    assert copy.help == "zone: optional here, only checked against the connection."
