"""The kit's pictures: swaps and memory against the hint, memory over time, digits (02-04)."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

__all__ = [
  "LOAD_COLOR",
  "MEMORY_COLOR",
  "RELEASE_COLOR",
  "digits_figure",
  "sweep_figure",
  "memory_timeline_figure",
  "memory_breakdown",
  "timeline_with_zoom_figure",
  "workers_figure",
  "worker_names",
  "eviction_figure",
  "above_start",
  "file_backed_above_start",
  "draw_models_memory",
  "resident_models",
  "accuracy_interval",
  "accuracy_figure",
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


def above_start(report) -> list[tuple[float, float]]:
  """Memory of the process tree over the run, in MB above its first sample (the pre-run start)."""
  timeline = report.memory_timeline()
  base = timeline[0]["rss_mb"] if timeline else 0.0
  return [(p["t"], p["rss_mb"] - base) for p in timeline]


def file_backed_above_start(report) -> list[tuple[float, float]]:
  """The file-backed part of the tree's memory (mapped weights), in MB above its first sample."""
  timeline = report.memory_timeline()
  base = timeline[0].get("file_mb", 0.0) if timeline else 0.0
  return [(p["t"], p.get("file_mb", 0.0) - base) for p in timeline]


def resident_models(report) -> list[tuple[float, int]]:
  """Models in memory (loaded, not yet freed) over the run, all processes: [(t, count)]."""
  steps, held = [(0.0, 0)], 0
  for e in report.events:
    if e["event"] in ("load", "release"):
      held += 1 if e["event"] == "load" else -1
      steps.append((e["t"] - report.start, held))
  return steps + [(report.seconds, held)]


def draw_models_memory(ax, steps: list[tuple[float, int]], size: Optional[float]) -> None:
  """The dashed line of what the models alone take: models in memory x `size` MB (04)."""
  if size and steps:
    ax.step(
      [t for t, _ in steps],
      [n * size for _, n in steps],
      where="post",
      color="black",
      linestyle="--",
      linewidth=0.9,
      label=f"models in memory x {size:g} MB",
    )


def memory_timeline_figure(
  report,
  ax=None,
  title: Optional[str] = None,
  models_ax=None,
  model_mb: Optional[float] = None,
  hint: Optional[int] = None,
):
  """Memory above the run's start against models resident x their size; below, the models resident.

  The red line is the process tree's resident memory minus its first sample, so a model's
  size reads directly off the y axis; the dashed line is what the models alone would take.
  Where the run maps its weights (`mmkit.core.mmap_load`), a red shade shows the file-backed part:
  pages the kernel can drop and read again, shared with other processes that map the file.
  On the lower panel (`models_ax`) the step line counts models resident (loads minus
  releases) against the hint, with loads and releases as thin ticks on lanes of their own.
  Given only `ax` (the explorer), the ticks go along the bottom of the memory panel.
  `model_mb` and `hint` default to the run's (`report.run`), for a pipeline of your own.
  """
  if ax is None:
    fig, (ax, models_ax) = plt.subplots(
      2, 1, figsize=(8, 4.4), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
  fig = ax.figure
  ax.plot(
    *zip(*(above_start(report) or [(0.0, 0.0)])),
    color=MEMORY_COLOR,
    linewidth=1.2,
    label="memory above the start (process tree)",
  )
  mapped = file_backed_above_start(report)
  # Mapped weights are file-backed: shaded apart, since the kernel can drop them (05, mmap loads).
  if max((mb for _, mb in mapped), default=0.0) > 8:
    times, megabytes = zip(*mapped)
    ax.fill_between(
      times,
      0,
      [max(mb, 0.0) for mb in megabytes],
      color=MEMORY_COLOR,
      alpha=0.2,
      linewidth=0,
      label="of which file-backed (mapped weights: droppable, shared)",
    )
  steps = resident_models(report)
  size = model_mb if model_mb is not None else _setting(report, "model_mb")
  draw_models_memory(ax, steps, size)
  end = report.pipeline_end
  xlabel = "seconds since the run started" + (" (dotted: pipeline done)" if end else "")
  for a in (ax, models_ax):
    if end and a is not None:
      a.axvline(end - report.start, color="gray", linestyle=":", linewidth=1)
  ticks = {
    kind: [e["t"] - report.start for e in report.events if e["event"] == kind]
    for kind in ("load", "release")
  }
  hint = hint if hint is not None else _setting(report, "hint")
  if models_ax is None:
    low = min(ax.get_ylim()[0], -0.06 * max(ax.get_ylim()[1], 1))
    for (kind, ts), color, y in zip(ticks.items(), (LOAD_COLOR, RELEASE_COLOR), (0.6, 0.3)):
      ax.plot(
        ts,
        [low * y] * len(ts),
        "|",
        color=color,
        markersize=6,
        alpha=0.7,
        label=f"{kind}s ({len(ts)})",
      )
  else:
    if steps:
      models_ax.step(
        [t for t, _ in steps],
        [n for _, n in steps],
        where="post",
        color=LOAD_COLOR,
        label="models resident",
      )
    cap = hint if hint is not None else report.effective_cap
    if cap is not None:
      models_ax.axhline(cap, color="gray", linewidth=0.8, linestyle=":", label=f"hint ({cap})")
    top = max([n for _, n in steps] + [cap or 0, 1])
    for (kind, ts), color, y in zip(ticks.items(), (LOAD_COLOR, RELEASE_COLOR), (0.9, 0.5)):
      models_ax.plot(
        ts,
        [top + y] * len(ts),
        "|",
        color=color,
        markersize=7,
        alpha=0.7,
        label=f"{kind}s ({len(ts)})",
      )
    models_ax.set_ylim(0, top + 1.3)
    models_ax.set_ylabel("models")
    models_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    models_ax.set_xlabel(xlabel)
    models_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
  if models_ax is None:
    ax.set_xlabel(xlabel)
  ax.set_ylabel("MB above the start")
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
  ax.set_title(
    title
    or f"hint={hint}: {report.loads} loads, {report.releases} releases, "
    f"peak {max((mb for _, mb in above_start(report)), default=0):.0f} MB above the start",
    fontsize=10,
  )
  fig.tight_layout()
  return fig


def memory_breakdown(report) -> dict:
  """The timeline's memory above the start, split as far as the report itself can (the sweep).

  From the first load's start to the pipeline's end (the run's, without one): the median memory
  above the start (`loading_mb`), the most models resident then times their size (`models_mb`,
  None without a size) and the rest (`not_models_mb`); `before_first_load_mb` is what the run
  held as its first load started, `peak_mb` its most. At the end, from the figures
  `mmkit.experiment.run_keyed` adds (None without them), this process's memory: what freeing
  the models returned (`freed_mb`), what `malloc_trim` returned after that (`trimmed_mb`: freed
  memory glibc had kept) and what stayed above its start (`left_mb`). None throughout: no loads.
  """
  points = above_start(report)
  loads = [e for e in report.events if e["event"] == "load"]
  size = _setting(report, "model_mb")
  figures = dict.fromkeys(
    ("before_first_load_mb", "loading_mb", "max_resident", "models_mb", "not_models_mb"), None
  )
  figures.update(model_mb=size, peak_mb=max((mb for _, mb in points), default=0.0))
  if loads and points:
    first = loads[0]["t"] - loads[0].get("seconds", 0.0) - report.start
    end = (report.pipeline_end or report.end) - report.start
    before = [mb for t, mb in points if t <= first]
    during = sorted(mb for t, mb in points if first <= t <= end) or [points[-1][1]]
    resident = [n for t, n in resident_models(report) if first <= t <= end]
    figures.update(
      before_first_load_mb=before[-1] if before else 0.0,
      loading_mb=during[len(during) // 2],
      max_resident=max(resident, default=0),
    )
    if size:
      figures["models_mb"] = figures["max_resident"] * size
      figures["not_models_mb"] = figures["loading_mb"] - figures["models_mb"]
  main = [s["rss_mb"] for s in report.samples if s.get("role") == "main"][:1]
  start = main[0] if main else (report.memory_timeline() or [{"rss_mb": None}])[0]["rss_mb"]
  at_end, freed, trimmed = report.rss_at_end_mb, report.rss_after_free_mb, report.rss_after_trim_mb
  figures.update(
    freed_mb=at_end - freed if None not in (at_end, freed) else None,
    trimmed_mb=freed - trimmed if None not in (freed, trimmed) else None,
    left_mb=trimmed - start if None not in (trimmed, start) else None,
  )
  return figures


def timeline_with_zoom_figure(
  report,
  window: Optional[tuple[float, float]] = None,
  zoom_loads: int = 12,
  title: Optional[str] = None,
):
  """The whole run's timeline (`memory_timeline_figure`), a zoom on part of it, what memory holds.

  A thrashing run's loads and releases draw as a solid band; the zoom below (same memory scale)
  shows `window` (seconds from the run's start; default: from the end of the first load, slow
  with its imports, to the end of `zoom_loads` loads more), shaded on the whole run, where each
  load and release is a tick of its own, with its process's memory as the event recorded it
  (finer than the sampler's 50 ms). Under the panels, what `memory_breakdown` tells from the
  report: models resident x their size against the rest, what the run held before its first
  load, and what freeing the models and `malloc_trim` gave back at the end.
  """
  fig, (mem, models, zoom, zoom_models) = plt.subplots(
    4, 1, figsize=(10, 9), gridspec_kw={"height_ratios": [3, 1.5, 3, 1.5]}
  )
  for top, bottom in ((mem, models), (zoom, zoom_models)):
    top.sharex(bottom)
    top.tick_params(labelbottom=False)
  zoom.sharey(mem)
  zoom_models.sharey(models)
  memory_timeline_figure(report, ax=mem, models_ax=models, title=title)
  memory_timeline_figure(report, ax=zoom, models_ax=zoom_models, title="")
  loads = [e["t"] - report.start for e in report.events if e["event"] == "load"]
  if window is None and loads:
    last = loads[min(zoom_loads, len(loads) - 1)]
    pad = 0.08 * max(last - loads[0], 0.01)
    window = (max(loads[0] - pad, 0.0), min(last + pad, report.seconds))
  window = window or (0.0, report.seconds)
  for ax, label in ((mem, "zoomed in below"), (models, None)):
    ax.axvspan(*window, color="0.5", alpha=0.2, linewidth=0, label=label)
  mem.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
  starts: dict = {}  # each process's first sample: its memory at the start
  for sample in report.samples:
    starts.setdefault(sample["pid"], sample["rss_mb"])
  for kind, color, marker in (("load", LOAD_COLOR, "o"), ("release", RELEASE_COLOR, "x")):
    points = [
      (e["t"] - report.start, e["rss_mb"] - starts[e["pid"]])
      for e in report.events
      if e["event"] == kind and e.get("rss_mb") is not None and e["pid"] in starts
    ]
    if points:
      zoom.plot(*zip(*points), marker, color=color, markersize=4, label=f"its process at a {kind}")
  if window[1] > window[0]:
    zoom.set_xlim(*window)
  for ax in (models, zoom_models):  # fewer labels than memory_timeline_figure's: shorter panels
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
  shown = {
    kind: sum(
      1
      for e in report.events
      if e["event"] == kind and window[0] <= e["t"] - report.start <= window[1]
    )
    for kind in ("load", "release")
  }
  zoom.set_title(
    f"zoom on {window[0]:.2f}-{window[1]:.2f} s: {shown['load']} of the {report.loads} loads, "
    f"{shown['release']} of the {report.releases} releases",
    fontsize=10,
  )
  zoom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
  zoom_models.get_legend().remove()  # the same lines as on the whole run
  zoom_models.set_xlabel("seconds since the run started")
  # What the report tells of the memory above the start, in words under the panels.
  parts, lines = memory_breakdown(report), []
  if parts["not_models_mb"] is not None:
    n = parts["max_resident"]
    lines.append(
      f"From the first load to the pipeline's end, median {parts['loading_mb']:.0f} MB above "
      f"the start: at most {n} model{'s' if n != 1 else ''} resident x {parts['model_mb']:g} MB "
      f"= {parts['models_mb']:.0f} MB, and {parts['not_models_mb']:.0f} MB that is not models "
      f"({parts['before_first_load_mb']:.0f} MB of it held before the first load)."
    )
  if parts["trimmed_mb"] is not None:
    lines.append(
      f"At the end, freeing the models (and Beam's servers) gave back {parts['freed_mb']:.0f} MB, "
      f"malloc_trim {parts['trimmed_mb']:.0f} MB more (freed blocks glibc had kept); "
      f"{parts['left_mb']:.0f} MB above the start stayed."
    )
  if lines:
    lines.append(
      "What the rest is (glibc keeping freed blocks, imports, thread stacks), measured: "
      "docs/measurements.md, bench/timeline_memory.py."
    )
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=8, va="bottom", ha="left")
  fig.tight_layout(rect=(0, 0.02 * len(lines), 1, 1))
  # tight_layout leaves every row the gap a title needs: each memory panel takes its own back.
  for top, bottom in ((mem, models), (zoom, zoom_models)):
    upper, lower = top.get_position(), bottom.get_position()
    top.set_position([upper.x0, lower.y1 + 0.01, upper.width, upper.y1 - lower.y1 - 0.01])
  return fig


def worker_names(report) -> dict[str, str]:
  """'worker 1', 'worker 2', ... in order of process id ('main' for the pipeline's own process)."""
  names, n = {}, 0
  for pid, w in report.workers().items():
    if w["role"] == "worker":
      n += 1
    names[pid] = f"worker {n}" if w["role"] == "worker" else w["role"]
  return names


def _setting(report, name: str):
  """A setting of the run a report measured (`report.run`), None for a report without one."""
  return getattr(report.run, name) if report.run is not None else None


def digits_figure(rows: dict, n: int = 8):
  """A grid of digits: one row per named [N, 64] array, `n` columns (02, 03).

  One image with light gaps, not an axes per digit: 48 axes took over a second to draw.
  """
  import numpy as np

  side, gap = 8, 1
  grid = np.full((len(rows) * (side + gap) - gap, n * (side + gap) - gap), np.nan)
  for r, images in enumerate(rows.values()):
    for c in range(n):
      top, left = r * (side + gap), c * (side + gap)
      grid[top : top + side, left : left + side] = np.asarray(images[c]).reshape(side, side)
  fig, ax = plt.subplots(figsize=(n * 0.75 + 1.0, len(rows) * 0.75))
  cmap = plt.get_cmap("gray_r").with_extremes(bad="#d9d9d9")  # the gaps (NaN): a light frame
  ax.imshow(grid, cmap=cmap, vmin=0, vmax=1)
  ax.set_xticks([])
  ax.set_yticks([r * (side + gap) + side / 2 - 0.5 for r in range(len(rows))], list(rows))
  ax.tick_params(length=0)
  ax.grid(False)
  for spine in ax.spines.values():
    spine.set_visible(False)
  fig.tight_layout()
  return fig


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
  mem.set_title(title or f"hint={_setting(report, 'hint')}: memory per process", fontsize=10)
  # Elements outnumber loads and batches: shrunk by 10 when there are many, so all bars show.
  shrink = 10 if max((workers[pid]["elements"] for pid in names), default=0) > 20 else 1
  kinds = [
    ("elements", "elements served" + (f" / {shrink}" if shrink > 1 else ""), 1 / shrink),
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
  mem.plot(
    *zip(*(above_start(report) or [(0.0, 0.0)])),
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
  size = _setting(report, "model_mb")
  in_memory = steps["in memory (not yet freed)"]
  draw_models_memory(mem, in_memory, size)  # beside what the process holds
  if size and in_memory:
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
  mem.set_title(title or f"hint={_setting(report, 'hint')}: evicted, freed, returned", fontsize=10)
  fig.tight_layout()
  return fig


def accuracy_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """Wilson score interval for an accuracy of `correct` of `n` (95% by default) (01, 06)."""
  if n == 0:
    return 0.0, 1.0
  p = correct / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
  return centre - half, centre + half


def accuracy_figure(rows: dict[str, tuple[int, int]], title: str = "Accuracy", ax=None):
  """Accuracy per arm as bars from 0 with 95% intervals: `rows` maps a label to (correct, n).

  Bars start at 0 so a gap looks as big as it is; the whiskers show how far each accuracy
  could move at its sample size, which is what decides whether a gap means anything (01, 06).
  """
  if ax is None:
    _, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.2))
  labels = list(rows)[::-1]  # first row on top
  values = [rows[k][0] / rows[k][1] for k in labels]
  intervals = [accuracy_interval(*rows[k]) for k in labels]
  errors = [
    [v - lo for v, (lo, _) in zip(values, intervals)],
    [hi - v for v, (_, hi) in zip(values, intervals)],
  ]
  ax.barh(labels, values, xerr=errors, color=LOAD_COLOR, alpha=0.8, capsize=4)
  for y, (k, v, (lo, hi)) in enumerate(zip(labels, values, intervals)):
    ax.text(1.02, y, f"{v:.3f}  [{lo:.3f}, {hi:.3f}]  n={rows[k][1]}", va="center", fontsize=8)
  ax.set_xlim(0, 1)
  ax.set_xlabel("accuracy (bars from 0; whiskers: 95% interval)")
  ax.set_title(title, fontsize=10)
  ax.figure.tight_layout()
  return ax.figure


def memory_limit_figure(reports: Sequence, title: Optional[str] = None):
  """Runs under a memory limit side by side: memory over each run, the limit, how each ended (04).

  Memory here is the whole process tree's, as the watchdog counts it (not above the start):
  the limit is a line at its own height. A run the watchdog ended stops where it passed it.
  """
  fig, axes = plt.subplots(
    1, len(reports), figsize=(5.5 * len(reports), 3.4), sharey=True, squeeze=False
  )
  for ax, report in zip(axes[0], reports):
    limit, error = _setting(report, "memory_limit_mb"), report.error
    timeline = report.memory_timeline()
    ax.plot(
      [p["t"] for p in timeline],
      [p["rss_mb"] for p in timeline],
      color=MEMORY_COLOR,
      linewidth=1.2,
      label="memory (process tree)",
    )
    loads = [e["t"] - report.start for e in report.events if e["event"] == "load"]
    ax.plot(loads, [0] * len(loads), "|", color=LOAD_COLOR, markersize=9, label="loads")
    if limit is not None:
      ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"limit {limit:g} MB")
    reached = report.memory_limit_reached_s
    if reached is not None:
      ax.axvline(reached, color=MEMORY_COLOR, linestyle=":", linewidth=1.2, label="limit passed")
    outcome = "ended by the limit" if error else "finished"
    ax.set_title(
      f"hint={_setting(report, 'hint')}: {outcome}, {report.loads} loads, "
      f"peak {report.peak_rss_mb:.0f} MB",
      fontsize=10,
    )
    ax.set_xlabel("seconds since the run started")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
  axes[0][0].set_ylabel("memory (MB)")
  top = max(
    [r.peak_rss_mb for r in reports] + [_setting(r, "memory_limit_mb") or 0 for r in reports]
  )
  axes[0][0].set_ylim(0, top * 1.12)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig
