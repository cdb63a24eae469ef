"""Trace the model loads and releases of any Beam pipeline, in any process (04_memory).

Copy this file with `beam_private.py` into a project (standard library and Beam only);
`python tracer.py` runs its example. Beam tells you how often a model was loaded (on runners
that report metrics), but not *when*, in *which process*, or when it was freed again:

    with Tracer() as tracer:
        handler = KeyedModelHandler(
            [KeyModelMapping([k], tracer.wrap(mh, key=k)) for k, mh in handlers.items()],
            max_models_per_worker_hint=2)
        run_my_pipeline(handler)
    events = tracer.events()   # [{"event": "load", "key", "pid", "t", "seconds", "rss_mb"}, ...]

Events are appended as JSON lines to files in a temporary directory, one file per process, so
worker processes and model servers are seen too. `sampler` (anything with `start()`, `stop()`
and `samples`: the kit's `mmkit.memwatch.MemorySampler`) samples memory meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from multiprocessing.managers import BaseProxy
from typing import Any, Callable, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler

try:
  from mmkit.core import beam_private
except ImportError:  # copied into a project beside beam_private.py
  import beam_private

__all__ = [
  "TracedModelHandler",
  "Tracer",
  "process_rss_mb",
  "record_event",
  "record_count",
  "close_event_files",
]

_MB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss_mb() -> float:
  """This process's resident memory in MB (Linux's /proc; 0.0 where it cannot be read)."""
  try:
    with open("/proc/self/statm", "rb") as f:
      return int(f.read().split()[1]) * _PAGE / _MB
  except (OSError, ValueError, IndexError):
    return 0.0


# One open, line-buffered file per (process, log dir): opening a file for every event cost
# more than the event itself, and a swapping run writes two events per load.
_event_files: dict[str, tuple[int, Any]] = {}
_event_files_lock = threading.Lock()
# log dir -> a callback for the events this process records there (`Tracer(on_event=...)`)
_listeners: dict[str, Callable[[dict], None]] = {}


def _append_event(log_dir: str, event: dict) -> None:
  # One file per process: appends from one process never interleave with another's.
  line = json.dumps(event) + "\n"
  pid = os.getpid()
  with _event_files_lock:
    entry = _event_files.get(log_dir)
    try:
      if entry is None or entry[0] != pid:  # new, or inherited across a fork
        entry = _event_files[log_dir] = (
          pid,
          open(os.path.join(log_dir, f"events-{pid}.jsonl"), "a", encoding="utf-8", buffering=1),
        )
      entry[1].write(line)
    except (OSError, ValueError):
      pass  # The tracer was closed (directory removed) while a model was still alive.
  listener = _listeners.get(log_dir)
  if listener is not None:
    listener(event)


def close_event_files(log_dir: str) -> None:
  """Closes this process's event file for `log_dir` (worker processes' files close as they exit)."""
  with _event_files_lock:
    entry = _event_files.pop(log_dir, None)
  if entry is not None and entry[0] == os.getpid():
    entry[1].close()


def record_event(log_dir: str, event: str, key: str, **fields) -> None:
  """Appends one event of this process (load, release, evict, cap, count, batch) to its trace."""
  _append_event(
    log_dir, {"event": event, "key": key, "pid": os.getpid(), "t": time.time(), **fields}
  )


def record_count(log_dir: str, name: str, n: int) -> None:
  """Adds `n` to the count `name` of a traced run (summed over bundles and processes)."""
  record_event(log_dir, "count", name, n=n)


def _record_release(log_dir: str, key: str, pid: int) -> None:
  _append_event(
    log_dir,
    {"event": "release", "key": key, "pid": pid, "t": time.time(), "rss_mb": process_rss_mb()},
  )


def _is_remote(model: Any) -> bool:
  """True for a model served through Beam's `MultiProcessShared` from another process."""
  unwrap = getattr(model, "get_auto_proxy_object", None)
  return unwrap is not None and isinstance(unwrap(), BaseProxy)


class TracedModelHandler(ModelHandler):
  """Wraps a ModelHandler so every load and every release of its model is recorded.

  A release is recorded when the loaded model object is freed (a `weakref.finalize`
  callback), which is what actually returns its memory, not when Beam decides to evict.
  Everything else is delegated to the wrapped handler unchanged.
  """

  def __init__(self, inner: ModelHandler, key: str, log_dir: str, time_batches: bool = False):
    self._inner = inner
    self._key = key
    self._log_dir = log_dir
    self._time_batches = time_batches
    # Copied so KeyedModelHandler's checks of the inner handler see the same settings.
    beam_private.share_env_vars(self, inner)

  @property
  def inner(self) -> ModelHandler:
    return self._inner

  @property
  def key(self) -> str:
    return self._key

  def load_model(self):
    start = time.time()
    model = self._inner.load_model()
    end = time.time()
    pid = os.getpid()
    _append_event(
      self._log_dir,
      {
        "event": "load",
        "key": self._key,
        "pid": pid,
        "t": end,
        "seconds": end - start,
        "rss_mb": process_rss_mb(),
      },
    )
    try:
      weakref.finalize(model, _record_release, self._log_dir, self._key, pid)
    except TypeError:
      pass  # Objects without weakref support: loads are still counted.
    return model

  def record(self, event: str, **fields) -> None:
    """Records an event about this handler's model (Beam's manager evicting it: `keyed.py`)."""
    record_event(self._log_dir, event, self._key, **fields)

  def run_inference(self, batch: Sequence[Any], model: Any, inference_args=None) -> Iterable[Any]:
    # A model Beam serves from another process arrives as a multiprocessing proxy: every
    # batch then crosses a socket. Those batches are always timed (they are the slow ones).
    proxied = _is_remote(model)
    if not (self._time_batches or proxied):
      return self._inner.run_inference(batch, model, inference_args)
    start = time.time()
    predictions = list(self._inner.run_inference(batch, model, inference_args))
    _append_event(
      self._log_dir,
      {
        "event": "batch",
        "key": self._key,
        "pid": os.getpid(),
        "t": start,
        "seconds": time.time() - start,
        "size": len(batch),
        "proxied": proxied,
      },
    )
    return predictions

  def get_num_bytes(self, batch: Sequence[Any]) -> int:
    return self._inner.get_num_bytes(batch)

  def get_metrics_namespace(self) -> str:
    return self._inner.get_metrics_namespace()

  def get_resource_hints(self) -> dict:
    return self._inner.get_resource_hints()

  def batch_elements_kwargs(self):
    return self._inner.batch_elements_kwargs()

  def validate_inference_args(self, inference_args):
    return self._inner.validate_inference_args(inference_args)

  def update_model_path(self, model_path=None):
    return self._inner.update_model_path(model_path)

  def get_preprocess_fns(self):
    return self._inner.get_preprocess_fns()

  def get_postprocess_fns(self):
    return self._inner.get_postprocess_fns()

  def should_skip_batching(self) -> bool:
    return self._inner.should_skip_batching()

  def share_model_across_processes(self) -> bool:
    return self._inner.share_model_across_processes()

  def model_copies(self) -> int:
    return self._inner.model_copies()


class Tracer:
  """Context manager: a log directory for TracedModelHandlers, and an optional memory sampler.

  Use one Tracer per run. `events()` reads what every process recorded; `close()` removes the
  temporary directory (a log dir you passed is left). `on_event` is called with each event this
  process records, as it is recorded (a progress display; worker processes' events are read
  from their files by `events()`).
  """

  def __init__(
    self,
    log_dir: Optional[str] = None,
    sampler: Any = None,
    on_event: Optional[Callable[[dict], None]] = None,
  ):
    self._own_dir = log_dir is None
    self.log_dir = log_dir or tempfile.mkdtemp(prefix="mmkit-trace-")
    self.sampler = sampler
    if on_event is not None:
      _listeners[self.log_dir] = on_event
    self.start: Optional[float] = None
    self.end: Optional[float] = None

  def wrap(self, handler: ModelHandler, key: str, time_batches: bool = False) -> TracedModelHandler:
    """The handler, traced under `key` (a key per model); `time_batches` times inference too."""
    return TracedModelHandler(handler, key, self.log_dir, time_batches)

  def __enter__(self) -> "Tracer":
    self.start = time.time()
    if self.sampler is not None:
      self.sampler.start()
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def stop(self) -> None:
    """Stops the sampler; the run's end is now."""
    if self.end is None:
      if self.sampler is not None:
        self.sampler.stop()
      self.end = time.time()

  @property
  def samples(self) -> list[dict]:
    """The memory samples (the sampler's; none without one)."""
    return list(self.sampler.samples) if self.sampler is not None else []

  def events(self) -> list[dict]:
    """Every event recorded so far, all processes, in time order."""
    events = []
    if os.path.isdir(self.log_dir):
      for name in sorted(os.listdir(self.log_dir)):
        with open(os.path.join(self.log_dir, name), encoding="utf-8") as f:
          events += [json.loads(line) for line in f if line.strip()]
    return sorted(events, key=lambda e: e["t"])

  def close(self) -> None:
    _listeners.pop(self.log_dir, None)
    close_event_files(self.log_dir)
    if self._own_dir:
      shutil.rmtree(self.log_dir, ignore_errors=True)


def _example() -> dict:
  """Two models behind a KeyedModelHandler with room for one: every swap is traced."""
  import apache_beam as beam
  import torch
  from apache_beam.ml.inference.base import KeyedModelHandler, KeyModelMapping, RunInference
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
  from apache_beam.options.pipeline_options import PipelineOptions

  folder = tempfile.mkdtemp(prefix="tracer-example-")
  with Tracer() as tracer:
    mappings = []
    for key in "ab":
      path = os.path.join(folder, f"{key}.pt")
      torch.save(torch.nn.Linear(4, 2).state_dict(), path)
      params = {"in_features": 4, "out_features": 2}
      handler = PytorchModelHandlerTensor(path, torch.nn.Linear, params, device="CPU")
      mappings.append(KeyModelMapping([key], tracer.wrap(handler, key)))
    examples = [(key, torch.ones(4)) for _ in range(3) for key in "ab"]
    with beam.Pipeline(options=PipelineOptions(runner="DirectRunner")) as pipeline:
      _ = (
        pipeline
        | beam.Create(examples, reshuffle=False)
        | RunInference(KeyedModelHandler(mappings, max_models_per_worker_hint=1))
      )
  events = tracer.events()
  tracer.close()
  loads = [e["key"] for e in events if e["event"] == "load"]
  return {
    "loads": len(loads),
    "keys": sorted(set(loads)),
    "processes": len({e["pid"] for e in events}),
  }


if __name__ == "__main__":
  import json

  print(json.dumps(_example()))
