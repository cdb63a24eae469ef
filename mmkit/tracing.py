"""Trace model loads, releases and memory of a Beam pipeline (taught in 04_memory).

Beam tells you how often a model was loaded (on runners that report metrics), but not
*when*, in *which process*, when it was freed again, or what that did to memory. This
module records all of it, on any runner, the InteractiveRunner included:

    with Tracer() as tracer:
        handler = KeyedModelHandler(
            [KeyModelMapping([k], tracer.wrap(mh, key=k)) for k, mh in handlers.items()],
            max_models_per_worker_hint=2)
        result = run_my_pipeline(handler)
    report = tracer.report(result)        # RunReport: loads, releases, memory timeline

Events are appended as JSON lines to files in a temporary directory, one file per
process, so worker processes and model servers (which Beam may run elsewhere) are seen
too. A background thread samples the memory of the whole process tree meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from multiprocessing.managers import BaseProxy
from typing import Any, Iterable, Optional, Sequence

import psutil
from apache_beam.ml.inference.base import ModelHandler

from mmkit.beam_metrics import beam_load_counts
from mmkit.memwatch import MB, TreeSampler
from mmkit.settings import KeyedRun

__all__ = [
  "TracedModelHandler",
  "Tracer",
  "RunReport",
  "MemorySampler",
  "process_rss_mb",
  "record_event",
  "record_count",
  "close_event_files",
]


_own_process: Optional[psutil.Process] = None


def process_rss_mb() -> float:
  """This process's resident memory; the psutil handle is cached (a new one costs ~30 us more)."""
  global _own_process
  try:
    if _own_process is None or _own_process.pid != os.getpid():
      _own_process = psutil.Process()
    return _own_process.memory_info().rss / MB
  except psutil.Error:
    return 0.0


# One open, line-buffered file per (process, log dir): opening a file for every event cost
# more than the event itself, and a swapping run writes two events per load.
_event_files: dict[str, tuple[int, Any]] = {}
_event_files_lock = threading.Lock()


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
    self._env_vars = getattr(inner, "_env_vars", {})

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
    """Records an event about this handler's model (Beam's manager evicting it: `mmkit.keyed`)."""
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


class MemorySampler:
  """Samples the resident memory of this process and all its descendants while a run goes.

  Descendants matter: the multi-processing DirectRunner runs workers as child processes,
  and Beam can serve shared models from a spawned server process. The sampling runs in a
  process of its own (`python -m mmkit.memwatch`): as a thread here it competed for the GIL
  with Beam's threads and cost a swapping run 5-8% (`bench/tracing_overhead.py`). Samples
  are read when the sampler stops, plus one taken here at start and one at stop. `samples`
  also holds, while the run goes, the start sample only; `in_process=True` samples from a
  thread instead, so `samples` grows live (the explorer's progress uses that).
  """

  def __init__(
    self,
    interval: float = 0.05,
    refresh_every: int = 10,
    in_process: bool = False,
    limit_mb: Optional[float] = None,
  ):
    if limit_mb is not None and in_process:
      raise ValueError("a memory limit needs the sampler's own process: in_process=False.")
    self.interval = interval
    self.refresh_every = refresh_every
    self.in_process = in_process
    self.limit_mb = limit_mb  # the watchdog: SIGINT to this process once the tree passes it
    self.limit_reached: Optional[dict] = None  # {"t", "rss_mb", "limit_mb", "processes"}
    self.samples: list[dict] = []  # {"t", "pid", "rss_mb", "file_mb", "role", "ppid"}
    self._tree = TreeSampler()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._child: Optional[subprocess.Popen] = None
    self._out = None

  def sample_once(self, refresh: bool = True) -> None:
    self.samples.extend(self._tree.sample(refresh))

  def _loop(self) -> None:
    ticks = 0
    while not self._stop.wait(self.interval):
      ticks += 1
      self.sample_once(refresh=ticks % self.refresh_every == 0)

  def start(self) -> "MemorySampler":
    if self.in_process:
      self._thread = threading.Thread(target=self._loop, name="mmkit-memory", daemon=True)
      self._thread.start()
    else:
      self._out = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
      self._child = subprocess.Popen(
        [
          sys.executable,
          "-m",
          "mmkit.memwatch",
          str(os.getpid()),
          "--interval",
          str(self.interval),
          "--refresh-every",
          str(self.refresh_every),
          *(["--limit-mb", str(self.limit_mb)] if self.limit_mb is not None else []),
        ],
        stdin=subprocess.PIPE,
        stdout=self._out,
        stderr=subprocess.DEVNULL,
      )
      self._tree.skip.add(self._child.pid)  # its own few MB are not the run's
    self.sample_once()
    return self

  def stop(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._child is not None:
      try:
        self._child.stdin.close()  # asks it to stop
        self._child.wait(timeout=10)
      except (OSError, subprocess.TimeoutExpired):
        self._child.kill()
        self._child.wait()
      self._out.seek(0)
      for line in self._out:
        if line.strip():
          record = json.loads(line)
          if record.get("event") == "memory_limit":
            self.limit_reached = record
          else:
            self.samples.append(record)
      self._out.close()
      self._child = None
    self.sample_once()
    self.samples.sort(key=lambda sample: sample["t"])


class _Extra(dict):
  """A report's `extra`. Notebooks written when a run's settings were kept here too
  (`report.extra["hint"]`) still read them: a setting not found here comes from the run."""

  def __init__(self, values=(), run: Optional[KeyedRun] = None):
    super().__init__(values)
    self.run = run

  def __missing__(self, key):
    if self.run is not None and key in self.run.__dataclass_fields__:
      return getattr(self.run, key)
    raise KeyError(key)

  def get(self, key, default=None):
    try:
      return self[key]
    except KeyError:
      return default


@dataclass
class RunReport:
  """What one traced run did: model loads and releases per key, memory over time.

  `run` is the KeyedRun measured (None for a pipeline of your own under a Tracer); `extra`
  holds the other figures a caller added (`simulated_loads`, `elements_out`, ...).
  """

  events: list[dict]
  samples: list[dict]
  start: float
  end: float
  beam_loads_by_key: Optional[dict] = None
  extra: dict = field(default_factory=dict)
  run: Optional[KeyedRun] = None

  def __post_init__(self):
    self.extra = _Extra(self.extra, self.run)

  @property
  def seconds(self) -> float:
    return self.end - self.start

  def _count(self, kind: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in self.events:
      if e["event"] == kind:
        counts[e["key"]] = counts.get(e["key"], 0) + 1
    return dict(sorted(counts.items()))

  @property
  def loads_by_key(self) -> dict[str, int]:
    return self._count("load")

  @property
  def releases_by_key(self) -> dict[str, int]:
    return self._count("release")

  @property
  def loads(self) -> int:
    return sum(self.loads_by_key.values())

  @property
  def releases(self) -> int:
    return sum(self.releases_by_key.values())

  @property
  def counts(self) -> dict[str, int]:
    """Element counts recorded by `CountElements(name, log_dir)` steps, by name."""
    totals: dict[str, int] = {}
    for e in self.events:
      if e["event"] == "count":
        totals[e["key"]] = totals.get(e["key"], 0) + e["n"]
    return totals

  def load_failures(self) -> list[dict]:
    """Models that failed to load, once per process and key: {"key", "path", "error", "pid"}."""
    return [
      {k: e.get(k) for k in ("key", "path", "error", "pid")}
      for e in self.events
      if e["event"] == "load_failed"
    ]

  @property
  def beam_loads(self) -> Optional[int]:
    """Beam's own total load count, None where the runner reports no metrics."""
    if self.beam_loads_by_key is None:
      return None
    return self.beam_loads_by_key.get("*", 0)

  def memory_timeline(self) -> list[dict]:
    """Total RSS of the tree per sampling instant: [{"t", "rss_mb", "file_mb", "processes"}].

    `file_mb` is the part of it backed by files (mapped weights, libraries): pages the kernel can
    drop under pressure, shared by processes that map the same file.
    """
    totals: dict[float, list[tuple[float, float]]] = {}
    for s in self.samples:
      totals.setdefault(s["t"], []).append((s["rss_mb"], s.get("file_mb", 0.0)))
    return [
      {
        "t": t - self.start,
        "rss_mb": sum(rss for rss, _ in v),
        "file_mb": sum(file for _, file in v),
        "processes": len(v),
      }
      for t, v in sorted(totals.items())
    ]

  @property
  def peak_rss_mb(self) -> float:
    return max((p["rss_mb"] for p in self.memory_timeline()), default=0.0)

  @property
  def pids(self) -> list[int]:
    return sorted({e["pid"] for e in self.events})

  def resident_steps(self) -> dict[int, list[tuple[float, int]]]:
    """Models held in memory per process over the run: [(t from start, count)] at each change.

    A model counts from its load until its object is freed (not until Beam evicts it).
    """
    steps: dict[int, list[tuple[float, int]]] = defaultdict(list)
    held: dict[int, int] = defaultdict(int)
    for e in self.events:
      if e["event"] in ("load", "release"):
        held[e["pid"]] += 1 if e["event"] == "load" else -1
        steps[e["pid"]].append((e["t"] - self.start, held[e["pid"]]))
    return dict(steps)

  def resident_at(self, t: float) -> dict[int, list[str]]:
    """The keys of the models each process held in memory at time `t` (epoch seconds)."""
    held: dict[int, list[str]] = defaultdict(list)
    for e in self.events:
      if e["t"] > t:
        break
      if e["event"] == "load":
        held[e["pid"]].append(e["key"])
      elif e["event"] == "release" and e["key"] in held[e["pid"]]:
        held[e["pid"]].remove(e["key"])
    return {pid: keys for pid, keys in held.items() if keys}

  @property
  def max_resident(self) -> int:
    """The most models one process held in memory at once."""
    return max((n for steps in self.resident_steps().values() for _, n in steps), default=0)

  @property
  def effective_cap(self) -> Optional[int]:
    """The cap Beam's keyed manager had in force: its own field, raised by the hint each time
    another process first used the handler (`mmkit.keyed.ObservedModelManager`); None: no cap."""
    caps = [e["n"] for e in self.events if e["event"] == "cap"]
    return max(caps) if caps else None

  @property
  def load_ms(self) -> Optional[float]:
    """Median time of one model load (ms), as the traced handler saw it; None without loads."""
    times = sorted(1000 * e["seconds"] for e in self.events if e["event"] == "load")
    return round(statistics.median(times), 1) if times else None

  def freed_models(self) -> list[dict]:
    """Each freed model: when Beam's manager evicted it, when it was freed, memory right after.

    `evicted_t` is None for a model freed at the end of the run without an eviction (the
    kit frees what Beam keeps). `t` and `evicted_t` are seconds from the run's start.
    """
    pending: dict[tuple[int, str], list[float]] = defaultdict(list)
    out = []
    for e in self.events:
      if e["event"] == "evict":
        pending[(e["pid"], e["key"])].append(e["t"])
      elif e["event"] == "release":
        evicted = pending[(e["pid"], e["key"])]
        evicted_t = evicted.pop(0) if evicted else None
        out.append(
          {
            "key": e["key"],
            "pid": e["pid"],
            "t": e["t"] - self.start,
            "evicted_t": None if evicted_t is None else evicted_t - self.start,
            "free_lag_ms": None if evicted_t is None else 1000 * (e["t"] - evicted_t),
            "rss_mb": e.get("rss_mb"),
          }
        )
    return out

  def workers(self) -> dict[str, dict]:
    """Per process that served elements or loaded models (Beam SDK workers, or this process).

    Beam 2.77 shares a keyed handler's model manager across the processes of a machine: one
    process loads and holds every model and the others are served through a localhost
    proxy (`proxied_batches`). `elements` are those that left inference in that process.
    """
    peaks: dict[int, float] = {}
    roles: dict[int, str] = {}
    for sample in self.samples:
      peaks[sample["pid"]] = max(peaks.get(sample["pid"], 0.0), sample["rss_mb"])
      roles[sample["pid"]] = sample["role"]
    counts = {kind: defaultdict(int) for kind in ("load", "release", "proxied", "elements")}
    for e in self.events:
      if e["event"] in ("load", "release"):
        counts[e["event"]][e["pid"]] += 1
      elif e["event"] == "batch" and e.get("proxied"):
        counts["proxied"][e["pid"]] += 1
      elif e["event"] == "count" and e["key"] == "elements_out":
        counts["elements"][e["pid"]] += e["n"]
    resident = {pid: max(n for _, n in steps) for pid, steps in self.resident_steps().items()}
    pids = sorted(
      {p for p, r in roles.items() if r == "worker"} | set(counts["load"]) | set(counts["elements"])
    )
    return {
      str(pid): {
        "role": roles.get(pid, "child"),
        "elements": counts["elements"][pid],
        "loads": counts["load"][pid],
        "releases": counts["release"][pid],
        "max_resident": resident.get(pid, 0),
        "proxied_batches": counts["proxied"][pid],
        "peak_rss_mb": round(peaks.get(pid, 0.0), 1),
      }
      for pid in pids
    }

  def proxied_batch_ms(self) -> Optional[float]:
    """Median time of one batch served through Beam's proxy from another process (ms)."""
    times = sorted(
      1000 * e["seconds"] for e in self.events if e["event"] == "batch" and e.get("proxied")
    )
    return round(statistics.median(times), 2) if times else None

  def summary(self) -> dict:
    """Plain data, ready for JSON (`workers` only where Beam ran worker processes)."""
    workers = self.workers()
    extra = {"workers": workers} if any(w["role"] == "worker" for w in workers.values()) else {}
    return {
      "loads": self.loads,
      "beam_loads": self.beam_loads,
      "releases": self.releases,
      "peak_rss_mb": round(self.peak_rss_mb, 1),
      "seconds": round(self.seconds, 3),
      "load_ms": self.load_ms,
      "max_resident": self.max_resident,
      "effective_cap": self.effective_cap,
      "proxied_batch_ms": self.proxied_batch_ms(),
      "loads_by_key": self.loads_by_key,
      "releases_by_key": self.releases_by_key,
      **(asdict(self.run) if self.run is not None else {}),
      **{k: v for k, v in self.extra.items() if k != "pipeline_end"},
      **extra,
    }

  def to_frame(self):
    """Load and release events as a pandas DataFrame, `t` in seconds from the run's start."""
    import pandas as pd

    frame = pd.DataFrame(
      [e for e in self.events if e["event"] in ("load", "release")],
      columns=["t", "event", "key", "pid", "rss_mb", "seconds"],
    )
    frame["t"] = frame["t"] - self.start
    return frame

  def batch_frame(self):
    """Timed inference batches (all with `wrap(..., time_batches=True)`, else the proxied ones)."""
    import pandas as pd

    frame = pd.DataFrame(
      [e for e in self.events if e["event"] == "batch"],
      columns=["t", "key", "pid", "size", "seconds", "proxied"],
    )
    frame["proxied"] = frame["proxied"].fillna(False).astype(bool)
    frame["t"] = frame["t"] - self.start
    frame["ms_per_element"] = 1000 * frame["seconds"] / frame["size"].clip(lower=1)
    return frame

  def memory_frame(self):
    """Memory samples per process as a pandas DataFrame, `t` in seconds from the run's start."""
    import pandas as pd

    frame = pd.DataFrame(self.samples, columns=["t", "pid", "rss_mb", "file_mb", "role"])
    frame["t"] = frame["t"] - self.start
    return frame


class Tracer:
  """Context manager: a log directory for TracedModelHandlers plus a memory sampler.

  Use one Tracer per run. On exit the sampler stops; `report()` reads the events, and
  `close()` (called by `report`) removes the temporary directory.
  """

  def __init__(
    self,
    sample_interval: float = 0.05,
    log_dir: Optional[str] = None,
    memory_limit_mb: Optional[float] = None,
  ):
    self._own_dir = log_dir is None
    self.log_dir = log_dir or tempfile.mkdtemp(prefix="mmkit-trace-")
    self.sampler = MemorySampler(sample_interval, limit_mb=memory_limit_mb)
    self.start = self.end = None

  def wrap(self, handler: ModelHandler, key: str, time_batches: bool = False) -> TracedModelHandler:
    """The handler, traced under `key` (a key per model); `time_batches` times inference too."""
    return TracedModelHandler(handler, key, self.log_dir, time_batches)

  def __enter__(self) -> "Tracer":
    self.start = time.time()
    self.sampler.start()
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def stop(self) -> None:
    if self.end is None:
      self.sampler.stop()
      self.end = time.time()

  def read_events(self) -> list[dict]:
    events = []
    if os.path.isdir(self.log_dir):
      for name in sorted(os.listdir(self.log_dir)):
        with open(os.path.join(self.log_dir, name), encoding="utf-8") as f:
          events += [json.loads(line) for line in f if line.strip()]
    return sorted(events, key=lambda e: e["t"])

  def report(
    self, result: Any = None, close: bool = True, run: Optional[KeyedRun] = None, **extra
  ) -> RunReport:
    """Stops sampling and returns the RunReport; `result` (a PipelineResult) adds Beam's counts,
    `run` the settings measured, `extra` any other figures."""
    self.stop()
    report = RunReport(
      self.read_events(),
      list(self.sampler.samples),
      self.start,
      self.end,
      beam_load_counts(result),
      dict(extra),
      run,
    )
    if close:
      self.close()
    return report

  def close(self) -> None:
    close_event_files(self.log_dir)
    if self._own_dir:
      shutil.rmtree(self.log_dir, ignore_errors=True)
