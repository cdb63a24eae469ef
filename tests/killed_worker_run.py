"""A worker process of a multi-process run is killed (SIGKILL, as the OOM killer does); then
the process runs again. Prints what the run raised and what was left behind, as JSON.

Run by tests/test_faults.py in a process of its own, so a hang fails a timeout instead of the
test session. The worker killed is the first to record a model load in the run's trace, so
the partial report has something to keep. usage: python tests/killed_worker_run.py
"""

import glob
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import psutil

# A temp dir of our own: the run's trace directory is found there (and Beam's files stay in it).
tempfile.tempdir = tempfile.mkdtemp(prefix="mmkit-killed-worker-")


class MarkedLines:
  """This process's stderr, each line marked `main| `: Beam's worker processes share the file
  (and the other worker prints its failed bundle's traceback, whatever its log level)."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text: str) -> int:
    return self._stream.write("".join("main| " + line for line in text.splitlines(True)))

  def flush(self) -> None:
    self._stream.flush()


sys.stderr = MarkedLines(sys.stderr)

from mmkit.experiment import run_keyed  # noqa: E402
from mmkit.faults import WorkerDied  # noqa: E402
from mmkit.pipelines import runner_options  # noqa: E402
from mmkit.settings import KeyedRun  # noqa: E402

killed: dict = {}


def loads_by_process() -> dict[int, int]:
  """Model loads recorded so far in the run's trace, per process id."""
  loads = {}
  for path in glob.glob(os.path.join(tempfile.tempdir, "mmkit-trace-*", "events-*.jsonl")):
    with open(path, encoding="utf-8") as f:
      n = sum('"event": "load"' in line for line in f)
    if n:
      loads[int(path.rsplit("-", 1)[1].split(".")[0])] = n
  return loads


def kill_a_loading_worker() -> None:
  while not (loads := loads_by_process()):
    time.sleep(0.05)
  pid = min(loads)
  killed.update(pid=pid, loads_before=loads[pid], t=time.time())
  os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
  # Minutes of work (a load per element): it is mid-run whenever the kill comes.
  slow = KeyedRun(
    models=4, hint=1, elements=20000, stream="cycle", batch_size=1, runner="multiprocess"
  )
  threading.Thread(target=kill_a_loading_worker, daemon=True).start()
  outcome = {}
  try:
    run_keyed(slow, runner_options("multiprocess"))
  except WorkerDied as error:
    report = error.report
    outcome.update(
      error=str(error),
      seconds_after_kill=time.time() - killed["t"],
      report_loads=report.loads,
      report_loads_of_killed=sum(
        e["event"] == "load" and e["pid"] == killed["pid"] for e in report.events
      ),
      report_error=report.error,
    )
  outcome["killed"] = killed
  outcome["children_left"] = [p.pid for p in psutil.Process().children(recursive=True)]
  after = run_keyed(KeyedRun(models=3, hint=1, elements=30, stream="cycle", batch_size=3))
  outcome.update(next_elements_out=after.elements_out, next_error=after.error)
  shutil.rmtree(tempfile.tempdir, ignore_errors=True)
  print(json.dumps(outcome))
