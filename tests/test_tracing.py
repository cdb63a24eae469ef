"""Tracing: loads and releases are recorded, agree with Beam's own metrics, memory is sampled."""

import gc
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import ModelHandler

from mmkit.core.tracer import Tracer
from mmkit.experiment import run_keyed
from mmkit.memwatch import MemorySampler
from mmkit.report import RunReport
from mmkit.settings import KeyedRun


class _Model:
  """A stand-in model: weakref-able, returns its input doubled."""

  def __call__(self, x):
    return 2 * x


class _DoublingHandler(ModelHandler):
  def load_model(self):
    return _Model()

  def run_inference(self, batch, model, inference_args=None):
    return [model(x) for x in batch]


def test_wrap_records_load_then_release_when_model_is_freed():
  with Tracer(sampler=MemorySampler()) as tracer:
    handler = tracer.wrap(_DoublingHandler(), key="k1")
    model = handler.load_model()
    assert list(handler.run_inference([1, 2], model)) == [2, 4]
    del model
    gc.collect()
  report = RunReport.of(tracer)
  assert [e["event"] for e in report.events] == ["load", "release"]
  assert report.loads_by_key == {"k1": 1} and report.releases_by_key == {"k1": 1}
  assert all(e["rss_mb"] > 0 for e in report.events)


def test_report_removes_its_temporary_directory():
  import os

  tracer = Tracer(sampler=MemorySampler())
  with tracer:
    tracer.wrap(_DoublingHandler(), key="k").load_model()
  assert os.path.isdir(tracer.log_dir)
  RunReport.of(tracer)
  assert not os.path.exists(tracer.log_dir)


def test_memory_sampler_sees_child_processes():
  child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
  try:
    sampler = MemorySampler(interval=0.02).start()
    time.sleep(0.2)
    sampler.stop()
  finally:
    child.kill()
    child.wait()
  assert child.pid in {s["pid"] for s in sampler.samples}
  assert {s["role"] for s in sampler.samples} >= {"main", "child"}


@pytest.mark.parametrize("stream,hint", [("cycle", 2), ("zipf", 1), ("uniform", 3)])
def test_trace_load_count_equals_beams_metric_on_direct_runner(stream, hint):
  report = run_keyed(KeyedRun(models=4, hint=hint, elements=300, stream=stream, batch_size=8))
  assert report.beam_loads is not None
  assert report.loads == report.beam_loads
  assert report.elements_out == 300
  # Every model loaded is released again: evicted by the LRU, or freed after the run.
  assert report.releases == report.loads
  # Beam's per-cohort counts agree with the trace, key by key.
  per_key = {k: v for k, v in report.beam_loads_by_key.items() if k != "*"}
  assert per_key == report.loads_by_key


def test_interactive_runner_is_traced_without_metrics():
  import apache_beam.runners.interactive.interactive_beam as ib
  from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

  from mmkit.core.cleanup import release_resident_models
  from mmkit.core.keyed import keyed_handler
  from mmkit.experiment import model_handlers
  from mmkit.inputs import keyed_examples
  from mmkit.pipelines import KeyedInference

  examples = keyed_examples(["clean", "noisy", "clean", "rotated"] * 10)
  with Tracer(sampler=MemorySampler()) as tracer:
    handlers = {k: tracer.wrap(mh, k) for k, mh in model_handlers(3).items()}
    p = beam.Pipeline(InteractiveRunner())
    preds = (
      p
      | beam.Create(examples, reshuffle=False)
      | KeyedInference(keyed_handler(handlers, hint=1, batch_size=4))
    )
    out = ib.collect(preds, n=len(examples), raw_records=True)
    release_resident_models()
  report = RunReport.of(tracer)
  assert len(out) == len(examples)
  assert report.beam_loads is None
  assert report.loads >= 3 and set(report.loads_by_key) == {"clean", "noisy", "rotated"}
  assert (
    len(report.memory_frame()) > 0
    and list(report.to_frame()["event"]).count("load") == report.loads
  )


def test_interactive_keyed_run_counts_outputs_without_metrics():
  report = run_keyed(
    KeyedRun(models=3, hint=1, elements=90, stream="cycle", batch_size=9, runner="interactive")
  )
  assert report.beam_loads is None
  assert report.elements_out == 90
  assert report.loads == report.simulated_loads


def test_multiprocess_runs_attribute_loads_and_memory_to_each_worker():
  report = run_keyed(
    KeyedRun(models=3, hint=1, elements=60, stream="cycle", batch_size=6, runner="multiprocess")
  )
  summary = report.summary()
  workers = summary["workers"]
  assert summary["elements_out"] == 60
  assert sum(1 for w in workers.values() if w["role"] == "worker") >= 2  # --direct_num_workers=2
  assert sum(w["loads"] for w in workers.values()) == report.loads
  # Loads happen in worker processes, never in the pipeline's own process.
  import os

  assert str(os.getpid()) not in workers and all(w["peak_rss_mb"] > 50 for w in workers.values())


def test_every_release_carries_its_eviction_its_free_time_and_the_memory_after():
  report = run_keyed(KeyedRun(models=4, hint=2, elements=120, stream="cycle", batch_size=4))
  freed = report.freed_models()
  assert len(freed) == report.releases == report.loads
  evicted = [f for f in freed if f["evicted_t"] is not None]
  # Every load past the first two evicts one model; the two resident at the end are freed
  # by the kit's cleanup, without an eviction.
  assert len(evicted) == report.loads - 2
  assert all(f["t"] >= f["evicted_t"] and f["free_lag_ms"] >= 0 for f in evicted)
  assert all(f["rss_mb"] > 0 for f in freed)
  assert report.effective_cap == 2  # Beam's own field, read by the kit's manager
  # A single process never holds more models than the hint.
  assert report.max_resident == 2


def test_memory_sampler_samples_from_its_own_process_and_leaves_none_behind():
  import psutil

  sampler = MemorySampler(interval=0.02).start()
  helper = sampler._child.pid
  time.sleep(0.5)
  sampler.stop()
  times = {s["t"] for s in sampler.samples}
  assert len(times) > 5  # sampled while this process slept: the sampling ran elsewhere
  assert helper not in {s["pid"] for s in sampler.samples}  # its own memory is not the run's
  assert not psutil.pid_exists(helper) or psutil.Process(helper).status() == psutil.STATUS_ZOMBIE
  assert [s["t"] for s in sampler.samples] == sorted(s["t"] for s in sampler.samples)


def test_a_report_carries_the_run_it_measured_and_its_figures_typed():
  import pickle

  run = KeyedRun(hint=2, stream="cycle")
  report = RunReport([], [], 0.0, 1.0, run=run, simulated_loads=3, pipeline_end=0.5)
  assert report.run is run and report.simulated_loads == 3 and report.error is None
  assert not hasattr(report, "extra")  # one typed value: no dict of untyped figures
  with pytest.raises(TypeError):
    RunReport([], [], 0.0, 1.0, run=run, hint=2)  # a setting is the run's, not a figure
  summary = report.summary()
  assert summary["hint"] == 2 and summary["simulated_loads"] == 3 and "pipeline_end" not in summary
  assert summary["elements_out"] == 0 and summary["error"] is None
  assert list(summary).index("hint") < list(summary).index("simulated_loads")  # settings first
  again = pickle.loads(pickle.dumps(report))  # as a sweep's fresh process sends it back
  assert again.run == run and again.run.hint == 2
  assert RunReport([], [], 0.0, 1.0).summary()["loads"] == 0  # a report without a run
