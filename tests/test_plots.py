"""mmkit.plots: the figures' own arithmetic, checked against an independent implementation."""

import pytest
from scipy.stats import binomtest

from mmkit.plots import accuracy_figure, accuracy_interval, digits_figure


@pytest.mark.parametrize("correct,n", [(120, 122), (410, 418), (0, 10), (10, 10), (37, 90)])
def test_accuracy_interval_is_scipys_wilson_interval(correct, n):
  expected = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
  low, high = accuracy_interval(correct, n)
  assert low == pytest.approx(expected.low, abs=1e-3)
  assert high == pytest.approx(expected.high, abs=1e-3)


def test_accuracy_figure_draws_bars_from_zero_with_one_interval_per_arm():
  fig = accuracy_figure({"A": (120, 122), "B": (410, 418)})
  ax = fig.axes[0]
  assert ax.get_xlim() == (0, 1)
  bars = ax.patches
  assert len(bars) == 2 and all(b.get_x() == 0 for b in bars)
  assert sorted(round(b.get_width(), 3) for b in bars) == [round(410 / 418, 3), round(120 / 122, 3)]


def test_digits_figure_puts_each_digit_in_its_row_and_column_with_its_name():
  import numpy as np

  rows = {
    "a": np.random.default_rng(0).random((3, 64)),
    "b": np.random.default_rng(1).random((3, 64)),
  }
  fig = digits_figure(rows, n=3)
  ax = fig.axes[0]
  grid = ax.get_images()[0].get_array()
  assert np.array_equal(grid[9:17, 18:26], rows["b"][2].reshape(8, 8))  # row 1, column 2
  assert np.ma.getmaskarray(grid)[8].all()  # a gap between the rows
  assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]


def _thrashing_report(model_mb=16, loads=40):
  """A hand-made hint-1 run: `loads` loads and releases 0.1 s apart from 1 s on, memory sampled.

  Memory above the start: 30 MB before the first load, 150 MB while loading (one 300 MB spike),
  80 MB after; at the end freeing gives back 30 MB and malloc_trim 60 MB, 70 MB stay.
  """
  from mmkit.report import RunReport
  from mmkit.settings import KeyedRun

  start, pid, base = 1000.0, 7, 400.0
  events = []
  for i in range(loads):
    t = start + 1.0 + 0.1 * i
    events.append({"event": "load", "key": f"k{i % 8}", "pid": pid, "t": t, "seconds": 0.02})
    events[-1]["rss_mb"] = base + 150
    events.append({"event": "release", "key": f"k{i % 8}", "pid": pid, "t": t + 0.05})
    events[-1]["rss_mb"] = base + 150
  samples = []
  for i in range(121):  # every 0.05 s for 6 s
    t = 0.05 * i
    above = 0.0 if t < 0.3 else 30.0 if t < 0.97 else 150.0 if t <= 5.2 else 80.0
    above = 300.0 if i == 60 else above
    samples.append({"t": start + t, "pid": pid, "rss_mb": base + above, "file_mb": 0.0})
    samples[-1]["role"] = "main"
  return RunReport(
    events,
    samples,
    start,
    start + 6.0,
    run=KeyedRun(models=8, hint=1, model_mb=model_mb, elements=2000),
    pipeline_end=start + 5.2,
    rss_at_end_mb=base + 160,
    rss_after_free_mb=base + 130,
    rss_after_trim_mb=base + 70,
  )


def _zoom_axes(fig):
  return next(ax for ax in fig.axes if ax.get_title().startswith("zoom"))


def test_the_zoom_shows_a_window_inside_the_run_with_some_but_not_all_loads():
  from mmkit.plots import timeline_with_zoom_figure

  report = _thrashing_report()
  fig = timeline_with_zoom_figure(report)
  whole, zoom = fig.axes[0], _zoom_axes(fig)
  low, high = zoom.get_xlim()
  assert 0 < low < high < report.seconds
  assert whole.get_xlim()[0] <= 0 and whole.get_xlim()[1] >= report.seconds
  loads = [e["t"] - report.start for e in report.events if e["event"] == "load"]
  shown = [t for t in loads if low <= t <= high]
  assert 0 < len(shown) < len(loads)
  assert f"{len(shown)} of the {len(loads)} loads" in zoom.get_title()
  # Its models panel (ticks and the step line) shows the same window.
  assert fig.axes[fig.axes.index(zoom) + 1].get_xlim() == (low, high)
  # A window asked for is the one shown.
  fig = timeline_with_zoom_figure(report, window=(2.0, 2.5))
  assert _zoom_axes(fig).get_xlim() == (2.0, 2.5)


@pytest.mark.parametrize("model_mb", [16, 40])
def test_the_figure_states_the_memory_that_is_not_models_from_the_report(model_mb):
  from mmkit.plots import memory_breakdown, timeline_with_zoom_figure

  report = _thrashing_report(model_mb)
  parts = memory_breakdown(report)
  assert parts["before_first_load_mb"] == pytest.approx(30)
  assert parts["loading_mb"] == pytest.approx(150)  # the median, not the 300 MB spike
  assert parts["max_resident"] == 1 and parts["models_mb"] == model_mb
  assert parts["not_models_mb"] == pytest.approx(150 - model_mb)
  assert (parts["freed_mb"], parts["trimmed_mb"], parts["left_mb"]) == pytest.approx((30, 60, 70))
  text = "\n".join(t.get_text() for t in timeline_with_zoom_figure(report).texts)
  assert f"1 model resident x {model_mb} MB = {model_mb} MB" in text
  assert f"{150 - model_mb} MB that is not models (30 MB of it held before the first load)" in text
  assert "gave back 30 MB, malloc_trim 60 MB more" in text and "70 MB above the start" in text


def test_memory_timeline_figure_still_draws_into_the_callers_axes():
  import matplotlib.pyplot as plt

  from mmkit.plots import memory_timeline_figure

  fig, (ax, models_ax) = plt.subplots(2, 1)
  assert (
    memory_timeline_figure(
      _thrashing_report(), ax=ax, models_ax=models_ax, model_mb=40, hint=2, title="mine"
    )
    is fig
  )
  assert ax.get_title() == "mine" and len(fig.axes) == 2
  labels = models_ax.get_legend_handles_labels()[1]
  assert "hint (2)" in labels and "loads (40)" in labels
  assert "models in memory x 40 MB" in ax.get_legend_handles_labels()[1]


def test_the_explorers_memory_axis_labels_no_memory_below_the_start():
  from mmkit.explorer import explorer_figure

  report = _thrashing_report()
  fig = explorer_figure(report, {"lru": {1: 40, 2: 30}, "optimal": {1: 40, 2: 20}})
  memory = fig.axes[0]
  assert memory.get_ylim()[0] < 0  # the lane of load and free ticks, below zero
  ticks = list(memory.get_yticks())
  assert ticks and min(ticks) == 0 and max(ticks) <= memory.get_ylim()[1]
