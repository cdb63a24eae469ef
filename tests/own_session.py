"""Runs a Python script in a session of its own: if it hangs, its whole group goes (Beam's
workers too), so a hung run cannot hold the caller's pipes (tests of interrupts and faults)."""

import os
import subprocess
import sys


def run_in_own_session(
  *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, bool]:
  """(the finished script, whether it hung); its `pid` is also its session's id."""
  child = subprocess.Popen(
    [sys.executable, *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  try:
    stdout, stderr = child.communicate(timeout=timeout)
    hung = False
  except subprocess.TimeoutExpired:
    os.killpg(child.pid, 9)
    stdout, stderr = child.communicate()
    hung = True
  done = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
  done.pid = child.pid
  return done, hung
