"""The hint explorer of the memory notebook: one traced run per click, redrawn (04_memory).

`explore(...)` is a plain function (tests call it directly); `explorer()` wraps it in
ipywidgets: hint slider, key stream, grouping, model size and a Run button that is
disabled while a run is in flight.
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt

from mmkit import data
from mmkit.experiment import KeyedRun, run_keyed
from mmkit.pipelines import GROUPINGS, model_keys
from mmkit.plots import memory_timeline_figure
from mmkit.simulate import lru_loads_by_capacity, model_accesses, optimal_loads
from mmkit.tracing import RunReport

__all__ = ["DEFAULTS", "explore", "swaps_by_hint", "explorer_figure", "explorer"]

# Chosen so a click returns in about a second on a 2-core laptop (see bench/explorer_click.py).
DEFAULTS = dict(models=8, hint=2, stream="zipf", group="none", model_mb=16.0, elements=256, batch_size=64)


def swaps_by_hint(run: KeyedRun) -> dict[str, dict[int, int]]:
  """Predicted loads of the run's stream for every hint: Beam's LRU and the optimum (Belady)."""
  stream = data.key_stream(run.stream, model_keys(run.models), run.elements, seed=run.seed)
  accesses = model_accesses(stream, run.batch_size, group=run.group)
  hints = range(1, run.models + 1)
  return {"lru": lru_loads_by_capacity(accesses, hints),
          "optimal": {h: optimal_loads(accesses, h) for h in hints}}


def explorer_figure(report: RunReport, predicted: dict[str, dict[int, int]]):
  """Left: memory over the run with loads and releases; right: loads against the hint."""
  fig, (mem_ax, swap_ax) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
  memory_timeline_figure(report, ax=mem_ax)
  hints = list(predicted["lru"])
  swap_ax.plot(hints, list(predicted["lru"].values()), "o-", color="#1f77b4", label="LRU (Beam), predicted")
  swap_ax.plot(hints, list(predicted["optimal"].values()), "s--", color="#7f7f7f", label="optimal (Belady)")
  hint = report.extra.get("hint") or max(hints)
  swap_ax.plot([hint], [report.loads], "*", color="#d62728", markersize=16, label=f"measured, hint={hint}")
  swap_ax.set_xlabel("max_models_per_worker_hint")
  swap_ax.set_ylabel("model loads")
  swap_ax.set_xticks(hints)
  swap_ax.set_ylim(bottom=0)
  swap_ax.legend(fontsize=8)
  swap_ax.set_title(f"stream={report.extra.get('stream')}, group={report.extra.get('group')}", fontsize=10)
  fig.tight_layout()
  return fig


def explore(hint: Optional[int] = DEFAULTS["hint"], stream: str = DEFAULTS["stream"],
            group: str = DEFAULTS["group"], model_mb: float = DEFAULTS["model_mb"],
            models: int = DEFAULTS["models"], elements: int = DEFAULTS["elements"],
            batch_size: int = DEFAULTS["batch_size"], runner: str = "interactive"):
  """The widget's callback: one traced run; returns (RunReport, Figure)."""
  run = KeyedRun(models=models, hint=hint, elements=elements, stream=stream, model_mb=model_mb,
                 batch_size=batch_size, runner=runner, group=group)
  report = run_keyed(run)
  fig = explorer_figure(report, swaps_by_hint(run))
  plt.close(fig)  # the caller displays it; not closing would draw it twice in a notebook
  return report, fig


def explorer(**defaults):
  """The interactive explorer: controls, a Run button, and the figure redrawn below them."""
  import ipywidgets as w
  from IPython.display import display
  settings = {**DEFAULTS, **defaults}
  hint = w.IntSlider(value=settings["hint"], min=1, max=settings["models"], description="hint")
  stream = w.Dropdown(options=data.STREAMS, value=settings["stream"], description="stream")
  group = w.Dropdown(options=GROUPINGS, value=settings["group"], description="grouping")
  size = w.Dropdown(options=[8.0, 16.0, 32.0, 64.0], value=settings["model_mb"], description="model MB")
  button = w.Button(description="Run", button_style="primary", icon="play")
  status = w.HTML()
  out = w.Output()

  def on_click(_=None):
    button.disabled = True  # one run at a time: a second click would measure two runs at once
    status.value = "running..."
    try:
      report, fig = explore(hint.value, stream.value, group.value, size.value, settings["models"],
                            settings["elements"], settings["batch_size"])
      with out:
        out.clear_output(wait=True)
        display(fig)
      status.value = (f"{report.loads} loads, {report.releases} releases, peak {report.peak_rss_mb:.0f} MB, "
                      f"{report.seconds:.1f} s")
    except Exception as error:  # shown in the UI: a widget callback's traceback is easy to miss
      status.value = f"<b>failed:</b> {error}"
    finally:
      button.disabled = False

  button.on_click(on_click)
  ui = w.VBox([w.HBox([hint, stream]), w.HBox([group, size, button]), status, out])
  return ui
