"""mmkit.core.cleanup: runs in one process, as from a notebook, leave nothing the kit can free."""

import os
import tempfile
import threading

import psutil
import pytest

from mmkit.core.cleanup import clean_up, release_resident_models
from mmkit.experiment import run_keyed
from mmkit.memwatch import MemorySampler
from mmkit.report import RunReport
from mmkit.settings import KeyedRun


def test_twenty_thrashing_runs_leave_no_models_threads_files_or_memory_behind(monkeypatch):
  from apache_beam.utils import multi_process_shared

  run = KeyedRun(models=4, hint=1, elements=100, stream="cycle", batch_size=4)
  run_keyed(run)  # warm-up: imports, caches, the synthetic models
  # Record the tags this process registers (other processes may write to the same temp dir).
  registry = multi_process_shared._process_level_singleton_manager
  tags = []
  register = registry.register_singleton
  monkeypatch.setattr(
    registry,
    "register_singleton",
    lambda constructor, tag, *a, **k: (tags.append(tag), register(constructor, tag, *a, **k))[1],
  )
  me = psutil.Process()
  rss_before, threads_before, fds_before = (
    me.memory_info().rss,
    threading.active_count(),
    me.num_fds(),
  )
  import mmkit.core.tracer

  traces = []
  mkdtemp = tempfile.mkdtemp
  monkeypatch.setattr(
    mmkit.core.tracer.tempfile,
    "mkdtemp",
    lambda *a, **k: traces.append(mkdtemp(*a, **k)) or traces[-1],
  )
  children_before = {p.pid for p in me.children(recursive=True)}
  loads = 0
  for _ in range(20):
    report = run_keyed(run)
    assert report.elements_out == 100
    loads += report.loads
  assert loads == 20 * 100  # every element swaps: each load used to leave 2 threads behind
  assert (me.memory_info().rss - rss_before) / 2**20 <= 50
  # Each model load starts a proxy server (two threads, a socket), each RunInference keeps a
  # connection to it open: all stopped and closed, so nothing grows from run to run.
  assert threading.active_count() <= threads_before
  assert me.num_fds() <= fds_before
  assert len(tags) >= loads  # one per model load, at least
  left = [t for t in tags if os.path.exists(os.path.join(tempfile.gettempdir(), t + ".address"))]
  assert not left and not [t for t in tags if t in registry.entries]
  # (Beam's own dirs too)
  mine = [d for d in traces if os.path.basename(d).startswith("mmkit-trace-")]
  # Each run's trace dir removed.
  assert len(mine) == 20 and not any(os.path.exists(d) for d in mine)
  assert {p.pid for p in me.children(recursive=True)} <= children_before


def test_release_frees_what_a_run_left_resident():
  from mmkit.core.tracer import Tracer
  from mmkit.experiment import keyed_pipeline, model_handlers

  run = KeyedRun(models=3, hint=None, elements=30, stream="cycle", batch_size=3)
  with Tracer(sampler=MemorySampler()) as tracer:
    pipeline = keyed_pipeline(run, {k: tracer.wrap(mh, k) for k, mh in model_handlers(3).items()})
    pipeline.run().wait_until_finish()
    import gc

    gc.collect()
    resident_before = tracer.events()
    freed = release_resident_models()
    gc.collect()
  report = RunReport.of(tracer)
  assert sum(e["event"] == "release" for e in resident_before) == 0  # Beam kept all three
  assert freed == 3 and report.releases == 3


def test_clean_up_frees_the_models_and_a_failed_run_ends_only_the_processes_started_since():
  import subprocess
  import sys

  from apache_beam.utils import multi_process_shared

  from mmkit.experiment import keyed_pipeline, model_handlers
  from mmkit.workers import stop_worker_processes

  sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
  older = subprocess.Popen(sleep)
  try:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    run = KeyedRun(models=3, hint=None, elements=30, stream="cycle", batch_size=3)
    pipeline = keyed_pipeline(run, model_handlers(3))
    pipeline.run().wait_until_finish()
    registry = multi_process_shared._process_level_singleton_manager
    resident = [t for t, e in registry.entries.items() if len(str(t)) == 32 and e.initialied]
    left_by_the_run = subprocess.Popen(sleep)  # stands in for a worker a failed run left
    memory = clean_up(pipeline, rss=lambda: 1.0)
    stop_worker_processes(exclude=before)  # what run_keyed adds on a failed run's way out
    assert len(resident) == 3 and not [t for t in resident if t in registry.entries]
    assert left_by_the_run.wait(timeout=10) is not None and older.poll() is None
    assert memory == {"rss_after_free_mb": 1.0, "rss_after_trim_mb": 1.0}
  finally:
    older.kill()
    older.wait()


# Multiprocess: as the workers start (which used to hang the kernel) and mid-run.
@pytest.mark.parametrize(
  "runner,moment", [("direct", "4"), ("multiprocess", "workers-start"), ("multiprocess", "6")]
)
def test_an_interrupted_run_leaves_the_kernel_usable_and_no_processes_behind(runner, moment):
  import json

  from own_session import run_in_own_session

  script = os.path.join(os.path.dirname(__file__), "interrupted_run.py")
  done, hung = run_in_own_session(script, runner, moment)
  if hung:
    pytest.fail(f"the interrupted run hung for 120 s:\n{done.stderr[-3000:]}")
  assert done.returncode == 0, done.stderr[-3000:]
  outcome = json.loads(done.stdout.strip().splitlines()[-1])
  assert outcome["interrupted"] and outcome["children_left"] == []
  # Beam's threads fail as the workers go; the kit keeps those expected reports off the screen.
  tail = done.stderr[-3000:]
  assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr, tail
  assert (
    outcome["next_elements_out"] == 30 and outcome["next_loads"] == outcome["next_simulated_loads"]
  )


def _dead_rendezvous_files() -> set:
  """Rendezvous files of Beam's shared objects whose server is gone (live ones are another's)."""
  import glob
  import socket

  dead = set()
  for path in glob.glob(os.path.join(tempfile.gettempdir(), "*.address")):
    try:
      with open(path) as f:
        host, port = f.read().rsplit(":", 1)
      socket.create_connection((host, int(port)), timeout=0.5).close()
    except ConnectionRefusedError:
      dead.add(path)
    except (OSError, ValueError):
      pass
  return dead


@pytest.mark.parametrize("runner", ["multiprocess", "interactive"])
def test_runs_leave_no_rendezvous_files_or_pipeline_dirs_in_the_temp_dir(runner, monkeypatch):
  # Multiprocess: the workers' model servers die with them and used to leave 36 files a run;
  # interactive: each run used to leave the temp dirs of the pipelines Beam derives from it.
  from mmkit.pipelines import runner_options

  made = []
  mkdtemp = tempfile.mkdtemp
  monkeypatch.setattr(
    tempfile, "mkdtemp", lambda *a, **k: made.append(mkdtemp(*a, **k)) or made[-1]
  )
  run = KeyedRun(models=2, hint=1, elements=60, stream="cycle", batch_size=4, runner=runner)
  dead_before = _dead_rendezvous_files()
  report = run_keyed(run, runner_options(runner) if runner == "multiprocess" else None)
  assert report.loads == report.simulated_loads > 2  # models were swapped: files were made
  assert _dead_rendezvous_files() - dead_before == set()
  pipeline_dirs = [d for d in made if os.path.basename(d).startswith("beam-pipeline-temp")]
  assert pipeline_dirs and not any(os.path.exists(d) for d in pipeline_dirs)
