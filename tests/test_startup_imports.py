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
