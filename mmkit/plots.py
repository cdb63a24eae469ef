"""The kit's pictures: swaps and memory against the hint, memory over time (taught in 04_memory)."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt

__all__ = [
  "sweep_figure",
  "memory_timeline_figure",
  "workers_figure",
  "worker_names",
  "eviction_figure",
  "memory_limit_figure",
]

LOAD_COLOR, MEMORY_COLOR, RELEASE_COLOR = "#1f77b4", "#d62728", "#2ca02c"


def sweep_figure(
  rows: Sequence[dict], grouped_loads: Optional[Sequence[int]] = None, title: Optional[str] = None
):
  """Left: model loads per hint (measured, Beam's, simulated, optimal, grouped); right: memory."""
  hints = [str(r["hint"]) if r["hint"] is not None else "none" for r in rows]
  fig, (ax, mem) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
  bars = ax.bar(
    hints, [r["loads"] for r in rows], color=LOAD_COLOR, alpha=0.75, label="measured (mmkit trace)"
  )
  ax.bar_label(bars, padding=2, fontsize=8)
  beam = [(h, r["beam_loads"]) for h, r in zip(hints, rows) if r.get("beam_loads") is not None]
  if beam:
    ax.plot(*zip(*beam), "k_", markersize=22, markeredgewidth=2, label="Beam's own count")
  if all(r.get("simulated_loads") is not None for r in rows):  # None: a reshuffled stream
    ax.plot(
      hints,
      [r["simulated_loads"] for r in rows],
      "x",
      color="#ff7f0e",
      markersize=9,
      markeredgewidth=2,
      label="simulated LRU",
    )
    ax.plot(
      hints, [r["optimal_loads"] for r in rows], "s--", color="#7f7f7f", label="optimal (Belady)"
    )
  if (
    grouped_loads is not None
    and None not in grouped_loads
    and rows[0].get("group", "none") == "none"
  ):
    ax.plot(hints, grouped_loads, "^:", color=RELEASE_COLOR, label="with GroupByKey (simulated)")
  ax.set_xlabel("max_models_per_worker_hint")
  ax.set_ylabel("model loads")
  ax.set_ylim(0, max(r["loads"] for r in rows) * 1.15 + 1)
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
  first = rows[0]
  ax.set_title(
    title
    or f"{first.get('models')} models, {first.get('elements')} elements, "
    f"stream={first.get('stream')}, "
    f"batch={first.get('batch_size')}, group={first.get('group', 'none')}",
    fontsize=10,
  )
  mem.bar(hints, [r["peak_rss_mb"] for r in rows], color=MEMORY_COLOR, alpha=0.75)
  mem.bar_label(mem.containers[0], fmt="%.0f", padding=2, fontsize=8)
  mem.set_xlabel("max_models_per_worker_hint")
  mem.set_ylabel("peak memory, process tree (MB)")
  mem.set_ylim(0, max(r["peak_rss_mb"] for r in rows) * 1.15)
  size = f"{first['model_mb']:g} MB models" if first.get("model_mb") else "shipped models"
  mem.set_title(f"Peak memory ({size})", fontsize=10)
  fig.tight_layout()
  return fig


def memory_timeline_figure(report, ax=None, title: Optional[str] = None):
  """Memory of the process tree over one run, with every model load and release marked."""
  if ax is None:
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
  else:
    fig = ax.figure
  timeline = report.memory_timeline()
  ax.plot(
    [p["t"] for p in timeline],
    [p["rss_mb"] for p in timeline],
    color=MEMORY_COLOR,
    linewidth=1.2,
    label="memory (RSS, process tree)",
  )
  frame = report.to_frame()
  for kind, color, marker in (("load", LOAD_COLOR, "^"), ("release", RELEASE_COLOR, "v")):
    rows = frame[frame["event"] == kind]
    if len(rows):
      ax.scatter(
        rows["t"],
        rows["rss_mb"],
        color=color,
        marker=marker,
        s=28,
        zorder=3,
        label=f"{kind} ({len(rows)})",
      )
  end = report.extra.get("pipeline_end")
  if end:
    ax.axvline(end - report.start, color="gray", linestyle=":", linewidth=1, label="pipeline done")
  ax.set_xlabel("seconds since the run started")
  ax.set_ylabel("memory (MB)")
  ax.set_ylim(bottom=0)
  ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
  hint = report.extra.get("hint")
  ax.set_title(
    title
    or f"hint={hint}: {report.loads} loads, {report.releases} releases, "
    f"peak {report.peak_rss_mb:.0f} MB",
    fontsize=10,
  )
  fig.tight_layout()
  return fig


def worker_names(report) -> dict[str, str]:
  """'worker 1', 'worker 2', ... in order of process id ('main' for the pipeline's own process)."""
  names, n = {}, 0
  for pid, w in report.workers().items():
    if w["role"] == "worker":
      n += 1
    names[pid] = f"worker {n}" if w["role"] == "worker" else w["role"]
  return names


def workers_figure(report, title: Optional[str] = None):
  """Per process: memory over the run with its loads ticked; elements, loads and proxied batches.

  With Beam 2.77's shared keyed manager one process loads every model and the others send
  their batches to it through a localhost proxy: the right panel shows who did what.
  """
  frame = report.memory_frame()
  workers = report.workers()
  names = worker_names(report)
  fig, (mem, bars) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
  loads = report.to_frame()
  loads = loads[loads["event"] == "load"]
  for pid, name in names.items():
    rows = frame[frame["pid"] == int(pid)]
    (line,) = mem.plot(rows["t"], rows["rss_mb"], label=name, linewidth=1.2)
    ticks = loads[loads["pid"] == int(pid)]
    if len(ticks):  # thin ticks at the bottom: when this process loaded a model
      mem.plot(ticks["t"], [0] * len(ticks), "|", color=line.get_color(), markersize=10, alpha=0.6)
  mem.set_xlabel("seconds since the run started (ticks at the bottom: model loads)")
  mem.set_ylabel("memory (RSS, MB)")
  mem.set_ylim(bottom=0)
  mem.legend(fontsize=8, loc="lower right")
  mem.set_title(title or f"hint={report.extra.get('hint')}: memory per process", fontsize=10)
  kinds = [
    ("elements", "elements served / 10", 0.1),
    ("loads", "model loads", 1),
    ("proxied_batches", "batches served through the proxy", 1),
  ]
  width = 0.8 / len(kinds)
  for i, (field, label, scale) in enumerate(kinds):
    xs = [j + (i - 1) * width for j in range(len(names))]
    b = bars.bar(xs, [workers[pid][field] * scale for pid in names], width, label=label)
    bars.bar_label(b, labels=[str(workers[pid][field]) for pid in names], fontsize=7, padding=1)
  bars.set_xticks(range(len(names)), list(names.values()))
  bars.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
  bars.set_title(f"Who did what (cap in force: {report.effective_cap})", fontsize=10)
  fig.tight_layout()
  return fig


def eviction_figure(report, title: Optional[str] = None):
  """Models Beam holds (loads minus evictions) against models in memory (loads minus frees),
  over memory above the run's starting point; eviction and free ticks on their own lane (04)."""
  events = report.to_frame()
  evictions = [e["t"] - report.start for e in report.events if e["event"] == "evict"]
  fig, (mem, held) = plt.subplots(
    2, 1, figsize=(10, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
  )
  timeline = report.memory_timeline()
  base = timeline[0]["rss_mb"] if timeline else 0.0
  mem.plot(
    [p["t"] for p in timeline],
    [p["rss_mb"] - base for p in timeline],
    color=MEMORY_COLOR,
    linewidth=1.2,
    label="memory above the start (RSS, process tree)",
  )
  mem.set_ylabel("MB above the start")
  mem.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
  steps = {"loaded, not yet evicted (Beam's view)": [], "in memory (not yet freed)": []}
  counts = [0, 0]
  marks = sorted(
    [(t, "load") for t in events[events.event == "load"].t]
    + [(t, "release") for t in events[events.event == "release"].t]
    + [(t, "evict") for t in evictions]
  )
  for t, kind in marks:
    counts[0] += {"load": 1, "evict": -1}.get(kind, 0)
    counts[1] += {"load": 1, "release": -1}.get(kind, 0)
    for (name, line), n in zip(steps.items(), counts):
      line.append((t, n))
  for (name, line), color, style in zip(steps.items(), (LOAD_COLOR, RELEASE_COLOR), ("-", "--")):
    if line:
      held.step(*zip(*line), where="post", color=color, linestyle=style, label=name)
  size = report.extra.get("model_mb")
  in_memory = steps["in memory (not yet freed)"]
  if size and in_memory:  # what the models alone would take, beside what the process holds
    mem.step(
      [t for t, _ in in_memory],
      [n * size for _, n in in_memory],
      where="post",
      color="black",
      linestyle="--",
      linewidth=0.9,
      label=f"models in memory x {size:g} MB",
    )
    mem.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
  if report.effective_cap is not None:
    held.axhline(
      report.effective_cap,
      color="gray",
      linewidth=0.8,
      linestyle=":",
      label=f"cap in force ({report.effective_cap})",
    )
  top = max([n for line in steps.values() for _, n in line] + [1])
  for ts, y, color, label in (
    (evictions, top + 0.9, LOAD_COLOR, "evictions"),
    (list(events[events.event == "release"].t), top + 0.5, RELEASE_COLOR, "frees"),
  ):
    held.plot(ts, [y] * len(ts), "|", color=color, markersize=7, alpha=0.7, label=label)
  held.set_ylim(0, top + 1.3)
  held.set_ylabel("models")
  held.set_xlabel("seconds since the run started")
  held.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
  mem.set_title(title or f"hint={report.extra.get('hint')}: evicted, freed, returned", fontsize=10)
  fig.tight_layout()
  return fig


def memory_limit_figure(reports: Sequence, title: Optional[str] = None):
  """Runs under a memory limit side by side: memory over each run, the limit, how each ended (04).

  A run the watchdog ended stops where its memory passed the limit; its panel says so.
  """
  fig, axes = plt.subplots(
    1, len(reports), figsize=(5.5 * len(reports), 3.4), sharey=True, squeeze=False
  )
  for ax, report in zip(axes[0], reports):
    limit, error = report.extra.get("memory_limit_mb"), report.extra.get("error")
    outcome = "ended by the limit" if error else "finished"
    memory_timeline_figure(
      report,
      ax=ax,
      title=f"hint={report.extra.get('hint')}: {outcome}, {report.loads} loads, "
      f"peak {report.peak_rss_mb:.0f} MB",
    )
    if limit is not None:
      ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"limit {limit:g} MB")
    reached = report.extra.get("memory_limit_reached_s")
    if reached is not None:
      ax.axvline(reached, color=MEMORY_COLOR, linestyle=":", linewidth=1.2, label="limit passed")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
  top = max(
    [r.peak_rss_mb for r in reports] + [r.extra.get("memory_limit_mb") or 0 for r in reports]
  )
  axes[0][0].set_ylim(0, top * 1.12)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig
