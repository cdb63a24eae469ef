"""What one traced run did, as one typed value: `RunReport` (04_memory).

Built from a `mmkit.core.tracer.Tracer`'s events and memory samples (`RunReport.of`): loads and
releases per key, the models each process held over time, memory, Beam's own counts, and the
figures `mmkit.experiment.run_keyed` adds (predicted loads, the memory at the end, why a run
ended early).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from mmkit.beam_metrics import beam_load_counts
from mmkit.core.tracer import Tracer
from mmkit.settings import KeyedRun

__all__ = ["RunReport"]


@dataclass
class RunReport:
  """What one traced run did: model loads and releases per key, memory over time.

  `run` is the KeyedRun measured (None for a pipeline of your own under a Tracer). The other
  fields are what `mmkit.experiment.run_keyed` adds; None where a run did not produce them.
  """

  events: list[dict]
  samples: list[dict]
  start: float
  end: float
  beam_loads_by_key: Optional[dict] = None
  run: Optional[KeyedRun] = None
  # Beam's LRU replayed on the run's batches, and Belady's optimum (mmkit.core.simulate)
  simulated_loads: Optional[int] = None
  optimal_loads: Optional[int] = None
  # None: the run finished; else why it ended early (one line, mmkit.faults)
  error: Optional[str] = None
  pipeline_end: Optional[float] = None  # epoch seconds: the pipeline done, before the clean-up
  # This process's memory when the pipeline ended, after the models were freed, after malloc_trim
  rss_at_end_mb: Optional[float] = None
  rss_after_free_mb: Optional[float] = None
  rss_after_trim_mb: Optional[float] = None
  memory_limit_by: Optional[str] = None  # how the limit was enforced (mmkit.faults)
  memory_limit_reached_s: Optional[float] = None  # when the watchdog stopped the run
  # Streaming runs (07): the wait windows add to each element, and what the windows hold
  latency_median_s: Optional[float] = None
  latency_p99_s: Optional[float] = None
  open_window_elements: Optional[int] = None

  @classmethod
  def of(cls, tracer: Tracer, result: Any = None, run: Optional[KeyedRun] = None, **figures):
    """The report of a traced run: stops the tracer's sampler, reads its events, closes it.

    `result` (a PipelineResult) adds Beam's own load counts, `run` the settings measured,
    `figures` any of the fields above.
    """
    tracer.stop()
    report = cls(
      tracer.events(),
      tracer.samples,
      tracer.start,
      tracer.end,
      beam_load_counts(result),
      run,
      **figures,
    )
    tracer.close()
    return report

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

  @property
  def elements_out(self) -> int:
    """Elements that left inference (`CountElements("elements_out", ...)`)."""
    return self.counts.get("elements_out", 0)

  @property
  def dead_letters(self) -> int:
    """Elements that could not be served (`CountElements("dead_letters", ...)`)."""
    return self.counts.get("dead_letters", 0)

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
    another process first used the handler (`mmkit.core.keyed.ObservedModelManager`); None: no
    cap."""
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
      **{f.name: getattr(self, f.name) for f in fields(self) if f.name in _FIGURES},
      "elements_out": self.elements_out,
      "dead_letters": self.dead_letters,
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


# The fields `summary` adds besides the run's settings: everything a run produces but its trace.
_FIGURES = frozenset(
  f.name
  for f in fields(RunReport)
  if f.name not in ("events", "samples", "start", "end", "beam_loads_by_key", "run", "pipeline_end")
)
