"""Start-up cost: every corso command pays for what its CLI imports, so heavy libraries that
only some commands use (boto3 for S3, test tools) are imported when those commands run."""

import subprocess
import sys

import pytest

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
