"""`python -m mmkit`: a bad argument is refused before Beam and torch are imported."""

import subprocess
import sys

import pytest

# Runs the CLI in a fresh interpreter and reports, after it exits, what it had imported.
PROBE = """
import sys
from mmkit.__main__ import main
try:
  main(sys.argv[1:])
except SystemExit as done:
  heavy = sorted({"torch", "apache_beam"} & set(sys.modules))
  print("exit", done.code, "imported", ",".join(heavy) or "-")
"""


@pytest.mark.parametrize(
  "args, flag",
  [
    (["sweep", "--hints", "0"], "--hints"),
    (["sweep", "--models", "12"], "--model-mb"),
    (["sweep", "--spread"], "--spread"),
    (["sweep", "--stream", "nope"], "--stream"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--elements", "0"], "--elements"),
  ],
)
def test_bad_arguments_are_refused_before_beam_and_torch_are_imported(args, flag):
  proc = subprocess.run(
    [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
  )
  assert proc.stdout.split() == ["exit", "2", "imported", "-"], proc.stdout + proc.stderr
  assert flag in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
