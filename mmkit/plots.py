"""The kit's pictures: swaps and memory against the hint, memory over time (taught in 04_memory)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt

__all__ = ["sweep_figure", "memory_timeline_figure"]

LOAD_COLOR, MEMORY_COLOR, RELEASE_COLOR = "#1f77b4", "#d62728", "#2ca02c"


def sweep_figure(rows: Sequence[dict], title: Optional[str] = None):
  """Bars: model loads per hint (Beam's count as dots); line: peak memory of the process tree."""
  hints = [str(r["hint"]) if r["hint"] is not None else "none" for r in rows]
  fig, ax = plt.subplots(figsize=(6.4, 3.6))
  bars = ax.bar(hints, [r["loads"] for r in rows], color=LOAD_COLOR, alpha=0.8, label="model loads (mmkit trace)")
  ax.bar_label(bars, padding=2, fontsize=8)
  beam = [(h, r["beam_loads"]) for h, r in zip(hints, rows) if r.get("beam_loads") is not None]
  if beam:
    ax.plot(*zip(*beam), "k.", markersize=9, label="model loads (Beam metrics)")
  models = rows[0].get("models")
  if models:
    ax.axhline(models, color="gray", linestyle=":", linewidth=1, label=f"{models} models: each loaded once")
  ax.set_xlabel("max_models_per_worker_hint")
  ax.set_ylabel("model loads (swaps + first loads)")
  ax.set_ylim(0, max(r["loads"] for r in rows) * 1.18 + 1)
  mem = ax.twinx()
  mem.plot(hints, [r["peak_rss_mb"] for r in rows], "o-", color=MEMORY_COLOR, label="peak memory")
  mem.set_ylabel("peak memory of process tree (MB)", color=MEMORY_COLOR)
  mem.tick_params(axis="y", colors=MEMORY_COLOR)
  mem.set_ylim(0, max(r["peak_rss_mb"] for r in rows) * 1.15)
  lines = ax.get_legend_handles_labels()[0] + mem.get_legend_handles_labels()[0]
  ax.legend(lines, [l.get_label() for l in lines], fontsize=8, loc="upper right", framealpha=0.9)
  first = rows[0]
  ax.set_title(title or f"{first.get('models')} models, {first.get('elements')} elements, "
               f"stream={first.get('stream')}, batch={first.get('batch_size')}", fontsize=10)
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
