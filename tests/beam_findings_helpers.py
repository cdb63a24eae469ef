"""Model handlers and runs for tests/test_beam_findings.py (see docs/beam_findings.md).

Runs that need a process of their own (a fresh peak RSS, a blocked import, Beam's worker or
model processes) start as `python tests/beam_findings_helpers.py MODE OUT_DIR`, with `tests/`
on PYTHONPATH (Beam's workers import these classes) and a private TMPDIR (Beam's rendezvous
files never mix with other runs on the machine). Each prints one JSON line: what it measured.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from typing import Any, Iterable, Optional, Sequence


def block_scipy() -> None:
  """Makes `import scipy` fail as on a machine without it (scipy stays installed)."""
  import importlib.abc

  class NoScipy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
      if name == "scipy" or name.startswith("scipy."):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
      return None

  sys.meta_path.insert(0, NoScipy())


if __name__ == "__main__" and sys.argv[1:2] == ["no_scipy"]:
  block_scipy()  # before Beam is imported: base.py imports the model manager (and scipy) once

import apache_beam as beam  # noqa: E402 (after block_scipy)
from apache_beam.ml.inference.base import (  # noqa: E402
  KeyedModelHandler,
  KeyModelMapping,
  ModelHandler,
  RunInference,
)
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

MB = 2**20


class WhereModel:
  """A 'model' holding `mb` MB of touched memory that answers with the process it ran in."""

  def __init__(self, name: str, mb: float = 1.0):
    import resource

    import psutil

    before = psutil.Process().memory_info().rss
    # How far the current RSS is below the process's peak: a load that fits there raises no peak.
    self.headroom_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before / MB
    self.name = name
    self.payload = b"\x01" * int(mb * MB)  # written, so resident (a zeroed bytearray may not be)
    self.grew_mb = (psutil.Process().memory_info().rss - before) / MB

  def __call__(self, batch: Sequence[Any]) -> list:
    return [(self.name, os.getpid(), x) for x in batch]


class WhereHandler(ModelHandler):
  """Loads a WhereModel; predicts (model name, forward pass's pid, caller's pid, example)."""

  def __init__(self, name: str, mb: float = 1.0, log_dir: Optional[str] = None):
    self._name, self._mb, self._log_dir = name, mb, log_dir

  def load_model(self) -> WhereModel:
    model = WhereModel(self._name, self._mb)
    if self._log_dir:
      append(
        self._log_dir,
        "loads",
        {
          "model": self._name,
          "pid": os.getpid(),
          "grew_mb": model.grew_mb,
          "headroom_mb": model.headroom_mb,
        },
      )
    return model

  def run_inference(
    self, batch: Sequence[Any], model: Any, inference_args: Optional[dict] = None
  ) -> Iterable:
    return [(name, pid, os.getpid(), x) for name, pid, x in model(list(batch))]


class BatchSizeHandler(ModelHandler):
  """Asks Beam for batches of exactly `size` and logs the size of each batch it is given."""

  def __init__(self, log_dir: str, size: int = 4):
    super().__init__(min_batch_size=size, max_batch_size=size)
    self._log_dir = log_dir

  def load_model(self) -> None:
    return None

  def run_inference(
    self, batch: Sequence[Any], model: Any, inference_args: Optional[dict] = None
  ) -> Iterable:
    append(self._log_dir, "batches", len(batch))
    return list(batch)


class OneByOneKeyedHandler(KeyedModelHandler):
  """Beam's KeyedModelHandler in batches of one element, so every run swaps alike."""

  def batch_elements_kwargs(self):
    return {"min_batch_size": 1, "max_batch_size": 1}


def append(log_dir: str, name: str, row: Any) -> None:
  """One JSON line to `<log_dir>/<name>-<pid>.jsonl` (a file per process: no interleaving)."""
  with open(os.path.join(log_dir, f"{name}-{os.getpid()}.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps(row) + "\n")


def read(log_dir: str, name: str) -> list:
  rows = []
  for path in sorted(glob.glob(os.path.join(log_dir, f"{name}-*.jsonl"))):
    with open(path, encoding="utf-8") as f:
      rows += [json.loads(line) for line in f]
  return rows


class Record(beam.DoFn):
  """Writes each prediction to the run's log dir (the runner may run it in another process)."""

  def __init__(self, log_dir: str):
    self._log_dir = log_dir

  def process(self, element):
    append(self._log_dir, "rows", element)


def in_memory() -> PipelineOptions:
  return PipelineOptions(
    runner="DirectRunner", direct_num_workers=1, direct_running_mode="in_memory"
  )


def distributions(result, suffix: str) -> dict:
  """{metric name: (count, sum, min, max)} of the distributions whose name ends with `suffix`."""
  found = {}
  for d in result.metrics().query()["distributions"]:
    if d.key.metric.name.endswith(suffix):
      r = d.committed
      found[d.key.metric.name] = (r.count, r.sum, r.min, r.max)
  return found


def run_workers(out: str, per_worker: int = 4) -> dict:
  """Two worker processes each alternate keys a, b through one keyed handler with hint 1."""
  mappings = [KeyModelMapping([key], WhereHandler(key, log_dir=out)) for key in ("a", "b")]
  handler = OneByOneKeyedHandler(mappings, max_models_per_worker_hint=1)
  options = PipelineOptions(
    runner="DirectRunner",
    direct_num_workers=2,
    direct_running_mode="multi_processing",
    default_sdk_harness_log_level="ERROR",
  )
  # After a GroupByKey the DirectRunner hands each of the two groups to its own worker.
  parts = [(part, ("ab"[i % 2], i)) for part in ("p0", "p1") for i in range(per_worker)]
  pipeline = beam.Pipeline(options=options)
  _ = (
    pipeline
    | beam.Create(parts)
    | beam.GroupByKey()
    | beam.FlatMap(lambda kv: sorted(kv[1], key=lambda v: v[1]))
    | RunInference(handler)
    | beam.ParDo(Record(out))
  )
  result = pipeline.run()
  result.wait_until_finish()
  rows = read(out, "rows")
  loads = distributions(result, "load_model_latency_milli_secs")
  return {
    "elements": len(rows),
    "forward_pids": sorted({r[1][1] for r in rows}),
    "caller_pids": sorted({r[1][2] for r in rows}),
    "load_pids": sorted({r["pid"] for r in read(out, "loads")}),
    "beam_loads": loads.get("load_model_latency_milli_secs", (0,))[0],
    "per_worker": per_worker,
    "main_pid": os.getpid(),
  }


def run_model_manager(out: str) -> dict:
  """A/B: two RunInference transforms with use_model_manager=True, six elements each."""
  import psutil
  from apache_beam.utils import multi_process_shared

  pipeline = beam.Pipeline(options=in_memory())
  data = pipeline | beam.Create(list(range(6)))
  for name in "AB":
    inference = RunInference(WhereHandler(name, mb=8), use_model_manager=True)
    _ = data | name >> inference | f"Record{name}" >> beam.ParDo(Record(out))
  pipeline.run().wait_until_finish()
  rows = read(out, "rows")
  manager = multi_process_shared._process_level_singleton_manager.entries["model_manager"].obj
  used, peak, total = manager._monitor.get_stats()
  children = []
  for process in psutil.Process().children(recursive=True):
    try:  # a flushed model's process may be a zombie not yet reaped: not a model process
      if process.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(process.cmdline()):
        children.append(process)
    except psutil.Error:
      pass
  # A spawned model's tag is <RunInference tag>_<uuid4 hex>: its lock file stays.
  spawned = [
    f
    for f in os.listdir(os.environ.get("TMPDIR", ""))
    if re.fullmatch(r"[0-9a-f]{32}_[0-9a-f]{32}\.lock", f)
  ]
  return {
    "forward_pids": {name: sorted({r[1] for r in rows if r[0] == name}) for name in "AB"},
    "main_pid": os.getpid(),
    "model_processes": sorted(p.pid for p in children),
    "used_mb": used,
    "peak_mb": peak,
    "total_mb": total,
    "estimates_mb": sorted(float(v) for v in manager._estimator.estimates.values()),
    "models_spawned": len(spawned),
    "models_held": sum(len(v) for v in manager._models.values()),
  }


def run_byte_size(out: str, mb: float = 48.0) -> dict:
  """Keyed a, b, a, b, hint 1 (each element loads an `mb` MB model): Beam's model_byte_size."""
  mappings = [KeyModelMapping([key], WhereHandler(key, mb, out)) for key in ("a", "b")]
  handler = OneByOneKeyedHandler(mappings, max_models_per_worker_hint=1)
  pipeline = beam.Pipeline(options=in_memory())
  _ = pipeline | beam.Create([("abab"[i], i) for i in range(4)]) | RunInference(handler)
  result = pipeline.run()
  result.wait_until_finish()
  found = distributions(result, "model_byte_size")
  loads = read(out, "loads")
  return {
    "model_mb": mb,
    "grew_mb": [r["grew_mb"] for r in loads],
    "headroom_mb": [r["headroom_mb"] for r in loads],
    "byte_size": {k: [v[0], v[1] / MB, v[2] / MB, v[3] / MB] for k, v in found.items()},
  }


def run_no_scipy(out: str, mb: float = 48.0) -> dict:
  """With scipy blocked before Beam's import: what base.py imported, a 48 MB model's byte size."""
  from apache_beam.ml.inference import base

  pipeline = beam.Pipeline(options=in_memory())
  _ = pipeline | beam.Create([1, 2]) | RunInference(WhereHandler("a", mb, out))
  result = pipeline.run()
  result.wait_until_finish()
  found = distributions(result, "model_byte_size")
  return {
    "resource_is_none": base.resource is None,
    "model_manager_is_none": base.ModelManager is None,
    "memory_reading": base._get_current_process_memory_in_bytes(),
    "grew_mb": [r["grew_mb"] for r in read(out, "loads")],
    "byte_size_sum_mb": sum(v[1] for v in found.values()) / MB,
    "byte_size_metrics": len(found),
  }


if __name__ == "__main__":
  # The `__main__` guard matters: use_model_manager starts model processes with `spawn`,
  # which re-imports the main module (without the guard each would run the pipeline again).
  mode, out_dir = sys.argv[1], sys.argv[2]
  runs = {
    "workers": run_workers,
    "model_manager": run_model_manager,
    "byte_size": run_byte_size,
    "no_scipy": run_no_scipy,
  }
  print(json.dumps(runs[mode](out_dir)), flush=True)
