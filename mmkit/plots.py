"""The kit's pictures: swaps and memory against the hint, memory over time (taught in 04_memory)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt

__all__ = ["sweep_figure", "memory_timeline_figure", "workers_figure"]

LOAD_COLOR, MEMORY_COLOR, RELEASE_COLOR = "#1f77b4", "#d62728", "#2ca02c"


def sweep_figure(rows: Sequence[dict], grouped_loads: Optional[Sequence[int]] = None, title: Optional[str] = None):
  """Left: model loads per hint (measured, Beam's count, simulated, optimal, grouped); right: peak memory."""
  hints = [str(r["hint"]) if r["hint"] is not None else "none" for r in rows]
  fig, (ax, mem) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
  bars = ax.bar(hints, [r["loads"] for r in rows], color=LOAD_COLOR, alpha=0.75, label="measured (mmkit trace)")
  ax.bar_label(bars, padding=2, fontsize=8)
  beam = [(h, r["beam_loads"]) for h, r in zip(hints, rows) if r.get("beam_loads") is not None]
  if beam:
    ax.plot(*zip(*beam), "k_", markersize=22, markeredgewidth=2, label="Beam's own count")
  if all("simulated_loads" in r for r in rows):
    ax.plot(hints, [r["simulated_loads"] for r in rows], "x", color="#ff7f0e", markersize=9,
            markeredgewidth=2, label="simulated LRU")
    ax.plot(hints, [r["optimal_loads"] for r in rows], "s--", color="#7f7f7f", label="optimal (Belady)")
  if grouped_loads is not None and rows[0].get("group", "none") == "none":
    ax.plot(hints, grouped_loads, "^:", color=RELEASE_COLOR, label="with GroupByKey (simulated)")
  ax.set_xlabel("max_models_per_worker_hint")
  ax.set_ylabel("model loads")
  ax.set_ylim(0, max(r["loads"] for r in rows) * 1.15 + 1)
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
  first = rows[0]
  ax.set_title(title or f"{first.get('models')} models, {first.get('elements')} elements, stream={first.get('stream')}, "
               f"batch={first.get('batch_size')}, group={first.get('group', 'none')}", fontsize=10)
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
  ax.plot([p["t"] for p in timeline], [p["rss_mb"] for p in timeline], color=MEMORY_COLOR,
          linewidth=1.2, label="memory (RSS, process tree)")
  frame = report.to_frame()
  for kind, color, marker in (("load", LOAD_COLOR, "^"), ("release", RELEASE_COLOR, "v")):
    rows = frame[frame["event"] == kind]
    if len(rows):
      ax.scatter(rows["t"], rows["rss_mb"], color=color, marker=marker, s=28, zorder=3,
                 label=f"{kind} ({len(rows)})")
  end = report.extra.get("pipeline_end")
  if end:
    ax.axvline(end - report.start, color="gray", linestyle=":", linewidth=1, label="pipeline done")
  ax.set_xlabel("seconds since the run started")
  ax.set_ylabel("memory (MB)")
  ax.set_ylim(bottom=0)
  ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
  hint = report.extra.get("hint")
  ax.set_title(title or f"hint={hint}: {report.loads} loads, {report.releases} releases, "
               f"peak {report.peak_rss_mb:.0f} MB", fontsize=10)
  fig.tight_layout()
  return fig


def workers_figure(report, title: Optional[str] = None):
  """Memory of each process over a run (main and Beam's workers), and model loads per worker."""
  frame = report.memory_frame()
  workers = report.workers()
  fig, (mem, loads) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [3, 2]})
  for (pid, role), rows in frame.groupby(["pid", "role"]):
    if role == "child" or rows["rss_mb"].max() < 50:
      continue  # shells and helpers: a few MB each
    mem.plot(rows["t"], rows["rss_mb"], label=f"{role} {pid}", linewidth=1.2)
  mem.set_xlabel("seconds since the run started")
  mem.set_ylabel("memory (RSS, MB)")
  mem.set_ylim(bottom=0)
  mem.legend(fontsize=8, loc="lower right")
  mem.set_title(title or f"hint={report.extra.get('hint')} per worker process", fontsize=10)
  names = [f"{w['role']} {pid}" for pid, w in workers.items()]
  bars = loads.bar(names, [w["loads"] for w in workers.values()], color=LOAD_COLOR)
  loads.bar_label(bars, fontsize=8, padding=2)
  loads.set_ylabel("model loads")
  loads.set_title("Loads per worker process", fontsize=10)
  loads.tick_params(axis="x", labelrotation=15, labelsize=8)
  fig.tight_layout()
  return fig
