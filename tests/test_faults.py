"""Faults during a run: a memory limit passed, a worker killed, a model file gone (issue 14)."""

import json
import re

import pytest

from mmkit.__main__ import main
from mmkit.settings import KeyedRun
from mmkit.sweep import sweep_reports

# 8 synthetic 64 MB models in key order: hint 2 holds 2 of them at once, hint 8 all 8.
EXAMPLE = dict(models=8, elements=128, stream="sorted", model_mb=64, batch_size=8)


def test_a_run_past_its_memory_limit_ends_with_a_row_saying_so_and_the_sweep_goes_on(capsys):
  # What hint 2 needs, measured as the sweep measures it (a fresh process); the limit is two
  # models above it (a load briefly holds a second copy of one), hint 8 needs six more.
  (measured,) = sweep_reports(KeyedRun(**EXAMPLE), hints=[2], progress=False)
  limit = round(measured.peak_rss_mb + 128)
  args = [f"--{k.replace('_', '-')}={v}" for k, v in EXAMPLE.items()]
  # The command line's own code, called here: its runs still each get a fresh process.
  status = main(
    [
      "sweep",
      *args,
      "--hints",
      "8",
      "2",
      "--memory-limit-mb",
      str(limit),
      "--json",
      "--no-progress",
    ]
  )
  out = capsys.readouterr()
  assert status == 0, out.err
  failed, finished = json.loads(out.out)
  assert finished["hint"] == 2 and finished["error"] is None
  assert finished["elements_out"] == 128 and finished["peak_rss_mb"] <= limit
  assert failed["hint"] == 8 and failed["elements_out"] < 128
  error = failed["error"]
  assert "\n" not in error and failed["memory_limit_by"] == finished["memory_limit_by"]
  held = re.fullmatch(
    rf"memory limit reached: the run's processes held (\d+) MB, above the limit of {limit} MB "
    r"\(watchdog\), with (\d+) models resident: ([\w, -]+); run ended after (\d+) loads",
    error,
  )
  assert held, error
  keys = held.group(3).split(", ")
  assert int(held.group(1)) > limit and int(held.group(2)) == len(keys) >= 3
  assert set(keys) <= set(failed["loads_by_key"]) and failed["loads"] == int(held.group(4))
  assert failed["peak_rss_mb"] >= int(held.group(1)) - 1  # the partial trace is kept (rounded)


def test_a_worker_killed_mid_run_ends_it_with_one_error_naming_the_process_and_the_cause():
  import os

  from own_session import run_in_own_session

  script = os.path.join(os.path.dirname(__file__), "killed_worker_run.py")
  done, hung = run_in_own_session(script)
  stdout, stderr = done.stdout, done.stderr
  if hung:
    pytest.fail(f"the run with a killed worker hung:\n{stderr[-3000:]}")
  assert done.returncode == 0, stderr[-3000:]
  outcome = json.loads(stdout.strip().splitlines()[-1])
  killed = outcome["killed"]
  assert "error" in outcome, outcome  # WorkerDied was raised
  assert re.fullmatch(
    rf"worker process {killed['pid']} \(worker [12] of 2\) was killed by signal 9 \(SIGKILL\): "
    r"out of memory\? \(the kernel's OOM killer sends it\); the run was ended after \d+ loads, "
    r"\d+ elements served",
    outcome["error"],
  ), outcome["error"]
  assert outcome["report_error"] == outcome["error"]
  # The partial report keeps what the trace held when the worker died.
  assert outcome["report_loads_of_killed"] >= killed["loads_before"] >= 1
  assert outcome["children_left"] == []
  # Beam's errors about the broken streams in this process are the death's echoes: kept off
  # the screen. (The other worker, ended a moment later, may print its failed bundle.)
  main = [line for line in stderr.splitlines() if line.startswith("main| ")]
  assert not [line for line in main if "Traceback" in line or "Exception in" in line], main
  assert outcome["next_elements_out"] == 30 and outcome["next_error"] is None


@pytest.mark.parametrize("fault", ["deleted", "corrupted"])
def test_a_model_file_gone_after_validation_fails_the_run_naming_it_and_loses_no_element(
  fault, tmp_path, monkeypatch
):
  import os

  import mmkit.experiment
  from mmkit.experiment import run_keyed
  from mmkit.faults import ModelFileFailed
  from mmkit.settings import KeyedRun

  monkeypatch.setenv("MMKIT_CACHE", str(tmp_path))  # synthetic models of our own to break
  made = mmkit.experiment.model_handlers

  def made_then_broken(n_models, model_mb=None, load="copy"):
    handlers = made(n_models, model_mb, load)  # built (and checked) as for any run, then broken
    path = handlers["noisy"]._state_dict_path
    if fault == "deleted":
      os.remove(path)
    else:
      with open(path, "r+b") as f:
        f.write(b"\0" * 512)
    return handlers

  monkeypatch.setattr(mmkit.experiment, "model_handlers", made_then_broken)
  # 3 keys in turn, hint 1: Beam's manager evicts before every load, and used to fail every
  # batch after the failed load (KeyError on the key it left behind).
  run = KeyedRun(models=3, hint=1, elements=60, stream="cycle", model_mb=1, batch_size=4)
  with pytest.raises(ModelFileFailed) as failed:
    run_keyed(run)
  path = os.path.join(str(tmp_path), "sized_1mb_1.pt")
  message = str(failed.value)
  assert "\n" not in message
  assert message.startswith(f"model file {path} for key 'noisy' could not be loaded during the run")
  assert message.endswith("20 elements not served (dead letters), 40 served")
  report = failed.value.report
  assert report.counts == {"elements_out": 40, "dead_letters": 20}  # every element counted
  assert report.loads_by_key.keys() == {"clean", "rotated"}
  assert [f["key"] for f in report.load_failures()] == ["noisy"]  # read once, not per element


def test_mixed_runs_in_one_process_leave_nothing_behind():
  # bench/many_runs.py, short: thrashing, grouped, interrupted and failed runs (memory limit,
  # a corrupted model file) one after another in one process, its temp dir its own.
  import os
  import subprocess
  import sys

  script = os.path.join(os.path.dirname(__file__), "..", "bench", "many_runs.py")
  proc = subprocess.run(
    [sys.executable, script, "--runs", "6", "--warmup", "1", "--json"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  figures = json.loads(proc.stdout.strip().splitlines()[-1])
  assert figures["ends"] == {
    "thrashing": {"finished": 1},
    "gbk": {"finished": 1},
    "interrupted": {"interrupted": 1},
    "memory-limit": {"MemoryLimitExceeded": 1},
    "batches": {"finished": 1},
    "file-gone": {"ModelFileFailed": 1},
  }
  before, after = figures["before"], figures["after"]
  # No thread, open file, socket or process; no temp dir, trace dir or rendezvous file.
  for name in ("threads", "os_threads", "fds", "sockets"):
    assert after[name] <= before[name], (name, before[name], after[name])
  assert after["children"] == [] and after["temp"] == before["temp"] == [], after["temp"]


def test_a_sweep_run_whose_own_process_is_killed_gets_a_row_saying_so_and_the_sweep_goes_on():
  import os
  import signal
  import threading
  import time

  import psutil

  def spawned(process: psutil.Process) -> bool:
    try:
      return "spawn_main" in " ".join(process.cmdline())
    except psutil.Error:  # a child that just ended
      return False

  def kill_the_runs_process():  # as the OOM killer would: the fresh process of the first run
    while not (runs := [p for p in psutil.Process().children() if spawned(p)]):
      time.sleep(0.05)
    os.kill(runs[0].pid, signal.SIGKILL)

  threading.Thread(target=kill_the_runs_process, daemon=True).start()
  # The kill comes as the first run's process starts: it always finds it running.
  run = KeyedRun(models=2, elements=200, stream="cycle", batch_size=1)
  killed, finished = sweep_reports(run, hints=[1, 2], progress=False)
  # How it ended is read from its exit code where it can be (not always: see _run_in_fresh_process).
  assert killed.error in (
    "the run's own process was killed by signal 9 (SIGKILL): out of memory? (the kernel's OOM "
    "killer sends it); nothing it traced could be read",
    "the run's own process ended abruptly (killed? the kernel's OOM killer sends SIGKILL: out "
    "of memory?); nothing it traced could be read",
  )
  assert killed.summary()["hint"] == 1 and killed.loads == 0
  assert finished.error is None and finished.elements_out == 200
