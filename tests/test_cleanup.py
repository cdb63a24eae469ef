"""Repeated runs in one process, as from a notebook widget: nothing leaks that the kit can free."""
import os
import tempfile
import threading

import psutil
import pytest

from mmkit.experiment import KeyedRun, run_keyed
from mmkit.keyed import release_resident_models


def test_twenty_thrashing_runs_leave_no_models_threads_files_or_memory_behind(monkeypatch):
  from apache_beam.utils import multi_process_shared
  run = KeyedRun(models=4, hint=1, elements=100, stream="cycle", batch_size=4)
  run_keyed(run)  # warm-up: imports, caches, the synthetic models
  # Record the tags this process registers (other processes may write to the same temp dir).
  registry = multi_process_shared._process_level_singleton_manager
  tags = []
  register = registry.register_singleton
  monkeypatch.setattr(registry, "register_singleton",
                      lambda constructor, tag, *a, **k: (tags.append(tag), register(constructor, tag, *a, **k))[1])
  me = psutil.Process()
  rss_before, threads_before, fds_before = me.memory_info().rss, threading.active_count(), me.num_fds()
  import mmkit.tracing
  traces = []
  mkdtemp = tempfile.mkdtemp
  monkeypatch.setattr(mmkit.tracing.tempfile, "mkdtemp", lambda *a, **k: traces.append(mkdtemp(*a, **k)) or traces[-1])
  children_before = {p.pid for p in me.children(recursive=True)}
  loads = 0
  for _ in range(20):
    report = run_keyed(run)
    assert report.extra["elements_out"] == 100
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
  mine = [d for d in traces if os.path.basename(d).startswith("mmkit-trace-")]  # (Beam's own dirs too)
  assert len(mine) == 20 and not any(os.path.exists(d) for d in mine)  # each run's trace dir removed
  assert {p.pid for p in me.children(recursive=True)} <= children_before


def test_release_frees_what_a_run_left_resident():
  import apache_beam as beam
  from mmkit.experiment import keyed_pipeline, model_handlers
  from mmkit.tracing import Tracer
  run = KeyedRun(models=3, hint=None, elements=30, stream="cycle", batch_size=3)
  with Tracer() as tracer:
    pipeline = keyed_pipeline(run, {k: tracer.wrap(mh, k) for k, mh in model_handlers(3).items()})
    pipeline.run().wait_until_finish()
    import gc
    gc.collect()
    resident_before = tracer.read_events()
    freed = release_resident_models()
    gc.collect()
  report = tracer.report()
  assert sum(e["event"] == "release" for e in resident_before) == 0  # Beam kept all three
  assert freed == 3 and report.releases == 3


def _interrupt_after(seconds):
  import signal
  # What Jupyter's stop button does: SIGINT to the kernel process (and to it alone).
  timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
  timer.start()
  return timer


# Multiprocess: once while the workers start (the case that used to hang), once mid-run.
@pytest.mark.parametrize("runner,after", [("direct", 4.0), ("multiprocess", 0.5), ("multiprocess", 6.0)])
def test_an_interrupted_run_leaves_the_kernel_usable_and_no_processes_behind(runner, after, capfd):
  from mmkit.pipelines import runner_options
  me = psutil.Process()
  children_before = {p.pid for p in me.children(recursive=True)}
  slow = KeyedRun(models=4, hint=1, elements=20000, stream="cycle", batch_size=1, runner=runner)
  timer = _interrupt_after(after)
  with pytest.raises(KeyboardInterrupt):
    run_keyed(slow, runner_options(runner))
  timer.cancel()
  assert {p.pid for p in me.children(recursive=True)} <= children_before
  err = capfd.readouterr().err
  assert "Traceback" not in err and "Exception in thread" not in err, err[-2000:]
  report = run_keyed(KeyedRun(models=3, hint=1, elements=30, stream="cycle", batch_size=3))
  assert report.extra["elements_out"] == 30 and report.loads == report.extra["simulated_loads"]
