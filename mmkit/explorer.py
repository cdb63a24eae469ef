"""The hint explorer of the memory notebook: one traced run per click, redrawn (04_memory).

`explore(...)` is a plain function (tests call it directly); `explorer()` wraps it in
ipywidgets: hint slider, key stream, grouping, model size and a Run button that is
disabled while a run is in flight. While a run goes, a `RunWatcher` thread shows its
loads, the elements served and the memory line as they grow.
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import io
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Optional

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmkit import data
from mmkit.core.simulate import (
  arrival_batches,
  lru_loads_by_capacity,
  model_accesses,
  optimal_loads,
  simulate_lru,
)
from mmkit.experiment import run_keyed
from mmkit.memwatch import MemorySampler
from mmkit.plots import (
  LOAD_COLOR,
  MEMORY_COLOR,
  RELEASE_COLOR,
  above_start,
  draw_models_memory,
  resident_models,
)
from mmkit.report import RunReport
from mmkit.settings import GROUPINGS, KeyedRun

__all__ = [
  "DEFAULTS",
  "MODEL_SIZES",
  "explore",
  "swaps_by_hint",
  "explorer_figure",
  "new_figure",
  "peak_above_start",
  "held_at_end",
  "explorer",
  "Progress",
  "RunWatcher",
  "served_before_load",
  "memory_sparkline",
  "figure_output",
]

# Chosen so the slider shows the lesson and a click stays short (bench/explorer_defaults.py
# prints the table, bench/browser_click.py times the click in chromium). With 4 models and a zipf
# stream of 32 elements in 4 batches of 8, hints 1-4 give 14, 10, 8, 4 loads (Beam's LRU
# replayed: `swaps_by_hint`). 40 MB models are above glibc's largest mmap threshold (32 MB), so
# each model's memory is a mapping of its own, returned when the model is freed: memory above
# the start steps by 40 MB per model resident. Smaller models come from the heap, which keeps
# freed pages, and their steps drown in its noise. A load reads the state dict, then copies it
# into the model: about 60 ms for 40 MB here, so bigger models, or a smaller hint, make a click
# slower; the default hint gives each model room (4 loads a click; 10 at hint 2). The in-memory
# DirectRunner: the InteractiveRunner adds its translation and caching to every click.
DEFAULTS = KeyedRun(
  models=4,
  hint=4,
  stream="zipf",
  group="none",
  model_mb=40.0,
  elements=32,
  batch_size=8,
  runner="direct",
)
MODEL_SIZES = (8.0, 16.0, 40.0, 64.0, 128.0)  # MB, the widget's choices


def swaps_by_hint(run: KeyedRun) -> dict[str, dict[int, int]]:
  """Predicted loads of the run's stream for every hint: Beam's LRU and the optimum (Belady)."""
  accesses = model_accesses(run.key_stream(), run.batch_size, group=run.group)
  hints = range(1, run.models + 1)
  return {
    "lru": lru_loads_by_capacity(accesses, hints),
    "optimal": {h: optimal_loads(accesses, h) for h in hints},
  }


def peak_above_start(report: RunReport) -> float:
  """The run's peak memory above its start, MB: the models held at once, plus the state dict of
  a model being loaded when the sampler caught one."""
  return max((mb for _, mb in above_start(report)), default=0.0)


def held_at_end(report: RunReport) -> Optional[float]:
  """This process's memory above its start when the pipeline ended, MB: the models Beam still
  held then, before the kit freed them (no load in flight, so no state dict on top)."""
  at_end = report.rss_at_end_mb
  start = next((s["rss_mb"] for s in report.samples if s["pid"] == os.getpid()), None)
  return None if at_end is None or start is None else at_end - start


def new_figure() -> Figure:
  """An empty explorer figure. Made by pyplot, whose import is what makes a kernel show figures
  as pictures (a bare `Figure()` showed as text in a notebook), and closed at once: the caller
  displays it, and an open one would be drawn a second time at the cell's end."""
  fig = plt.figure(figsize=(11, 3.6))
  plt.close(fig)
  return fig


def explorer_figure(report: RunReport, predicted: dict[str, dict[int, int]], fig=None):
  """Left: memory above the start beside models resident x model size, loads and frees ticked;
  right: loads against the hint (measured, Beam's LRU predicted, the optimum). `fig`: redrawn."""
  if fig is None:
    fig = new_figure()
  fig.clear()
  mem_ax, swap_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
  memory = above_start(report)
  mem_ax.plot(*zip(*memory), color=MEMORY_COLOR, linewidth=1.4, label="memory above the start")
  size = report.run.model_mb
  steps = resident_models(report)
  draw_models_memory(mem_ax, steps, size)
  top = max([mb for _, mb in memory] + [n * (size or 0) for _, n in steps] + [1.0]) * 1.12
  mem_ax.set_ylim(-0.22 * top, top)  # below zero: a lane of its own for the load/free ticks
  # Ticks from zero up only: memory is never below the start here, the lane is not memory.
  mem_ax.set_yticks([t for t in MaxNLocator(5).tick_values(0, top) if 0 <= t <= top])
  lane = mem_ax.get_xaxis_transform()  # x in seconds, y in axes fraction
  for kind, color, y in (("load", LOAD_COLOR, 0.11), ("release", RELEASE_COLOR, 0.04)):
    ts = [e["t"] - report.start for e in report.events if e["event"] == kind]
    mem_ax.plot(
      ts,
      [y] * len(ts),
      "|",
      color=color,
      markersize=8,
      transform=lane,
      label=f"{'loads' if kind == 'load' else 'frees'} ({len(ts)})",
    )
  mem_ax.axhline(0, color="#999999", linewidth=0.6)
  mem_ax.set_xlim(0, max(report.seconds, 1e-3))
  mem_ax.set_xlabel("seconds since the run started")
  mem_ax.set_ylabel("MB above the start")
  mem_ax.legend(fontsize=8, loc="upper left", ncol=2, frameon=False)
  hint = report.run.hint
  mem_ax.set_title(
    f"hint={hint}: {report.loads} loads, peak {peak_above_start(report):.0f} MB above the start",
    fontsize=10,
    y=1.0,  # a fixed place: finding one measured every tick label at each draw
  )
  hints = list(predicted["lru"])
  swap_ax.plot(
    hints, list(predicted["lru"].values()), "o-", color=LOAD_COLOR, label="LRU (Beam), predicted"
  )
  swap_ax.plot(
    hints, list(predicted["optimal"].values()), "s--", color="#7f7f7f", label="optimal (Belady)"
  )
  swap_ax.plot(
    [hint or max(hints)],
    [report.loads],
    "*",
    color="#d62728",
    markersize=16,
    label=f"measured, hint={hint}",
  )
  swap_ax.set_xlabel("max_models_per_worker_hint")
  swap_ax.set_ylabel("model loads")
  swap_ax.set_xticks(hints)
  top = max([report.loads, *predicted["lru"].values()]) * 1.15 + 1
  swap_ax.set_ylim(0, top)
  # A corner the curve leaves free (`loc="best"` tried every place at each draw: 40 ms a click).
  swap_ax.legend(fontsize=8, loc="lower left" if predicted["lru"][1] > top / 2 else "upper right")
  swap_ax.set_title(
    f"stream={report.run.stream}, group={report.run.group}",
    fontsize=10,
    y=1.0,
  )
  # Fixed margins: tight_layout measures every text and cost 0.15 s a click.
  fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.91, wspace=0.2)
  return fig


def explore(
  run: KeyedRun = DEFAULTS,
  on_progress: Optional[Callable[[Progress], None]] = None,
  fig: Optional[Figure] = None,
):
  """The widget's callback: one traced run of `run`; returns (RunReport, Figure).

  `on_progress`, if given, is called from a watcher thread about four times a second while the
  run goes (a `Progress`: loads, releases, elements served, memory so far). `fig`, if given, is
  redrawn instead of making a new figure (the widget keeps one).
  """
  with _young_objects_only():  # run_keyed turns Nagle's waits off (mmkit.core.beam_private)
    if on_progress is None:
      report = run_keyed(run)
    else:
      with RunWatcher(run, on_progress) as watcher:
        report = run_keyed(run, on_event=watcher.on_event)
  return report, explorer_figure(report, swaps_by_hint(run), fig)


@contextmanager
def _young_objects_only():
  """Lets the run's cleanup collect only objects made during the run (`gc.freeze` meanwhile).

  The cleanup's full collection (`mmkit.core.cleanup.return_freed_memory`) walked every object
  of the kernel, about 400,000 after Beam, torch and matplotlib are imported: a click took
  1.10 s with it, 0.92 s without (`python bench/explorer_click.py --clicks 9 --without gc`,
  load 2.6). What the run leaves behind is all young, so freezing what was there before frees
  the same models; unfreezing hands the old objects back to the collector unchanged.
  """
  if gc.get_freeze_count():  # frozen already (`mmkit.notebook.setup`): unfreezing would undo it
    yield
    return
  gc.freeze()
  try:
    yield
  finally:
    gc.unfreeze()


class Progress(dict):
  """What a watched run has done so far: loads, releases, elements served (at least), memory."""


def served_before_load(run: KeyedRun) -> list[int]:
  """Elements served before the i-th model load (i from 1), by replaying Beam's LRU on the stream.

  Loads are the only per-batch signal a run writes while it goes; a load of batch b means the
  batches before b are served. Exact for the in-memory runner, a lower bound otherwise.
  """
  stream = run.key_stream()
  served, done, loads = [0], 0, 0
  accesses: list = []
  for batch in arrival_batches(stream, run.batch_size, run.group):
    accesses += dict.fromkeys(batch)
    cumulative = simulate_lru(accesses, run.hint).loads
    served += [done] * (cumulative - loads)
    loads, done = cumulative, done + len(batch)
  return served


class RunWatcher:
  """Follows a run of this process while it goes: its events, and memory, every `interval`.

  Pass `on_event` to the run's tracer (`run_keyed(run, on_event=watcher.on_event)`): it counts
  the events this process records. It calls `on_progress(Progress)` from its own thread.
  """

  def __init__(
    self, run: KeyedRun, on_progress: Callable[[Progress], None], interval: float = 0.25
  ):
    self._run, self._on_progress, self._interval = run, on_progress, interval
    self._served = served_before_load(run)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, name="mmkit-explorer-watch", daemon=True)
    self._sampler = MemorySampler(interval, in_process=True)  # read live, while the run goes
    self._loads = self._releases = self._batch_elements = 0
    self._start = time.time()

  def __enter__(self) -> "RunWatcher":
    self._start = time.time()
    self._sampler.start()
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self._sampler.stop()

  def on_event(self, event: dict) -> None:
    """Counts one traced event (called by the tracer, in the thread that recorded it)."""
    kind = event["event"]
    if kind == "load":
      self._loads += 1
    elif kind == "release":
      self._releases += 1
    elif kind == "batch":
      self._batch_elements += event["size"]

  def progress(self) -> Progress:
    """The run so far; memory is the process tree's total RSS per sample, in MB."""
    totals: dict[float, float] = {}
    for sample in list(self._sampler.samples):
      totals[sample["t"]] = totals.get(sample["t"], 0.0) + sample["rss_mb"]
    memory = [(t - self._start, mb) for t, mb in sorted(totals.items())]
    lower_bound = self._served[min(self._loads, len(self._served) - 1)]
    return Progress(
      loads=self._loads,
      releases=self._releases,
      elements=self._run.elements,
      served=max(lower_bound, self._batch_elements),
      memory=memory,
      seconds=time.time() - self._start,
    )

  def _loop(self) -> None:
    self._on_progress(self.progress())  # at once: a short run may end before the first interval
    while not self._stop.wait(self._interval):
      self._on_progress(self.progress())


def memory_sparkline(memory: list[tuple[float, float]], width: int = 360, height: int = 60) -> str:
  """The memory line so far, above its first sample, as a small inline SVG: cheap enough to redraw
  four times a second. Above the start: a few models' MB would be a flat line on the kernel's."""
  if len(memory) < 2:
    return ""
  t_end = max(memory[-1][0], 1e-9)
  base = memory[0][1]
  top = max(max(mb for _, mb in memory) - base, 1.0) * 1.1
  points = " ".join(
    f"{t / t_end * width:.1f},{height - max(mb - base, 0.0) / top * height:.1f}" for t, mb in memory
  )
  return (
    f'<svg class="mmkit-memory" width="{width}" height="{height}"'
    ' style="border:1px solid #ddd">'
    f'<polyline fill="none" stroke="#2ca02c" stroke-width="1.5" points="{points}"/></svg>'
    f'<div style="font-size:11px;color:#555">memory so far: {memory[-1][1] - base:.0f} MB '
    f"above the start (peak {top / 1.1:.0f} MB) over {memory[-1][0]:.1f} s</div>"
  )


def figure_output(fig) -> dict:
  """The figure as an Output widget's display_data: one PNG, drawn once (no tight bounding box)."""
  buf = io.BytesIO()
  # Compression level 1: a few KB more to send over localhost, 10 ms less to encode.
  fig.savefig(buf, format="png", dpi=100, pil_kwargs={"compress_level": 1})
  return {
    "output_type": "display_data",
    "metadata": {},
    "data": {
      "image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
      "text/plain": f"<explorer figure, {fig.get_figwidth():.0f} in wide>",
    },
  }


def explorer(run: KeyedRun = DEFAULTS, progress: bool = True):
  """The interactive explorer: controls, a Run button, and the figure redrawn below them.

  `run` sets what the controls start at and what they leave alone (models, elements, batch
  size, runner); `progress=False` turns the live progress off (bench/browser_click.py compares
  both).
  """
  import ipywidgets as w

  watch = progress
  hint = w.IntSlider(value=run.hint or run.models, min=1, max=run.models, description="hint")
  stream = w.Dropdown(options=data.STREAMS, value=run.stream, description="stream")
  group = w.Dropdown(options=GROUPINGS, value=run.group, description="grouping")
  size = w.Dropdown(
    options=sorted({*MODEL_SIZES, run.model_mb or MODEL_SIZES[0]}),
    value=run.model_mb or MODEL_SIZES[0],
    description="model MB",
  )
  button = w.Button(description="Run", button_style="primary", icon="play")
  status = w.HTML()
  served = w.IntProgress(value=0, min=0, max=run.elements, description="served")
  live = w.HTML()  # the memory line while a run goes
  out = w.Output()
  figure = new_figure()  # one figure, redrawn by every click

  def show_progress(p: Progress) -> None:  # from the watcher thread: widget updates are thread-safe
    served.value = p["served"]
    status.value = (
      f"running: {p['loads']} loads, {p['releases']} releases, "
      f"at least {p['served']} of "
      f"{p['elements']} elements served, {p['seconds']:.1f} s"
    )
    live.value = memory_sparkline(p["memory"])

  def on_click(_=None):
    button.disabled = True  # one run at a time: a second click would measure two runs at once
    status.value = "running..."
    served.value = 0
    try:
      chosen = dataclasses.replace(
        run, hint=hint.value, stream=stream.value, group=group.value, model_mb=size.value
      )
      report, fig = explore(chosen, on_progress=show_progress if watch else None, fig=figure)
      out.outputs = (figure_output(fig),)  # replaced in one update: no flicker, no empty frame
      served.value = report.elements_out
      live.value = ""
      status.value = (
        f"{report.loads} loads, {report.releases} releases, "
        f"peak {peak_above_start(report):.0f} MB above the start, "
        f"{report.seconds:.1f} s"
      )
    except Exception as error:  # shown in the UI: a widget callback's traceback is easy to miss
      status.value = f"<b>failed:</b> {error}"
    finally:
      button.disabled = False

  button.on_click(on_click)
  ui = w.VBox([w.HBox([hint, stream]), w.HBox([group, size, button]), status, served, live, out])
  return ui
