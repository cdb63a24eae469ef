"""A reader presses stop during a run, then runs again: prints what was left behind, as JSON.

Run by tests/test_cleanup.py in a process of its own, so a hang fails a timeout instead of the
test session, and the SIGINT can never reach pytest itself.
usage: python tests/interrupted_run.py RUNNER (SECONDS | workers-start)
"""

import json
import os
import signal
import sys
import threading
import time

import psutil

from mmkit.experiment import run_keyed
from mmkit.pipelines import runner_options
from mmkit.settings import KeyedRun  # noqa: E402


def interrupt_when(moment: str) -> None:
  """SIGINT to this process (the stop button) after a few seconds, or as Beam's workers start."""
  me = psutil.Process()
  if moment == "workers-start":
    while not any(is_beam_worker(p) for p in me.children(recursive=True)):
      time.sleep(0.01)
  else:
    time.sleep(float(moment))
  sent.append(time.time())
  os.kill(os.getpid(), signal.SIGINT)


sent: list = []  # when the SIGINT was sent


def is_beam_worker(process: psutil.Process) -> bool:
  """A Beam SDK worker, or the shell that starts one (the interrupt can come that early)."""
  try:
    return "sdk_worker_main" in " ".join(process.cmdline())
  except psutil.Error:
    return False


if __name__ == "__main__":
  runner, moment = sys.argv[1], sys.argv[2]
  slow = KeyedRun(models=4, hint=1, elements=20000, stream="cycle", batch_size=1, runner=runner)
  threading.Thread(target=interrupt_when, args=(moment,), daemon=True).start()
  started, interrupted = time.time(), False
  try:
    run_keyed(slow, runner_options(runner))
  except KeyboardInterrupt:
    interrupted = True
  seconds, stop_seconds = time.time() - started, time.time() - (sent or [time.time()])[0]
  left = [p.pid for p in psutil.Process().children(recursive=True)]
  report = run_keyed(KeyedRun(models=3, hint=1, elements=30, stream="cycle", batch_size=3))
  print(
    json.dumps(
      {
        "interrupted": interrupted,
        "seconds": seconds,
        "stop_seconds": stop_seconds,  # from the SIGINT to the run's KeyboardInterrupt
        "children_left": left,
        "next_elements_out": report.elements_out,
        "next_loads": report.loads,
        "next_simulated_loads": report.simulated_loads,
      }
    )
  )
