"""The hint explorer without a browser: progress while a run goes, and the widget's Run button."""

from __future__ import annotations

from dataclasses import replace

from mmkit import data
from mmkit.core.simulate import model_accesses, simulate_lru
from mmkit.data import model_keys
from mmkit.explorer import (
  DEFAULTS,
  explore,
  explorer,
  held_at_end,
  memory_sparkline,
  served_before_load,
  swaps_by_hint,
)
from mmkit.settings import KeyedRun

SMALL = dict(elements=128, batch_size=32, model_mb=8.0)
DEFAULT_RUN = replace(DEFAULTS, hint=1)


def test_default_loads_fall_with_every_hint():
  predicted = swaps_by_hint(DEFAULT_RUN)["lru"]  # Beam's LRU replayed on the default stream
  loads = [predicted[h] for h in range(1, DEFAULTS.models + 1)]
  assert all(a > b for a, b in zip(loads, loads[1:])), f"the slider would show {loads}"
  assert loads[-1] == DEFAULTS.models, "with room for every model, each loads once"


def test_default_memory_steps_with_the_hint():
  """Real traced runs at hint 1 and at one hint per model: loads as predicted, and the models
  held when the pipeline ends show in memory above the start (one model against all)."""
  models, size = DEFAULTS.models, DEFAULTS.model_mb
  predicted = swaps_by_hint(DEFAULT_RUN)["lru"]
  explore(
    replace(DEFAULTS, hint=1, elements=DEFAULTS.batch_size)
  )  # a process's first run also grows its heap
  held = {}
  for hint in (1, models):
    report, fig = explore(replace(DEFAULTS, hint=hint))
    assert report.loads == predicted[hint]
    assert report.max_resident <= hint, "a process held more models than the hint"
    held[hint] = held_at_end(report)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert f"models in memory x {size:g} MB" in labels
  # Expected: (models - 1) x size more; half of it leaves room for the allocator's noise.
  assert held[models] - held[1] >= (models - 1) * size / 2, held


def test_served_before_load_follows_the_lru_replay():
  run = KeyedRun(models=8, hint=2, elements=256, stream="zipf", model_mb=16.0, batch_size=64)
  served = served_before_load(run)
  stream = data.key_stream(run.stream, model_keys(run.models), run.elements, seed=run.seed)
  assert len(served) == simulate_lru(model_accesses(stream, run.batch_size), run.hint).loads + 1
  assert served == sorted(served) and served[0] == 0 and served[-1] < run.elements
  assert set(served) <= set(range(0, run.elements, run.batch_size))


def test_progress_while_the_run_goes():
  seen = []
  report, _ = explore(replace(DEFAULTS, **SMALL), on_progress=seen.append)
  assert seen, "no progress during the run"
  loads = [p["loads"] for p in seen]
  assert loads == sorted(loads) and loads[-1] <= report.loads
  memory = [len(p["memory"]) for p in seen]
  assert memory == sorted(memory) and memory[-1] >= 2, "the memory line does not grow"
  assert all(0 <= p["served"] <= p["elements"] == SMALL["elements"] for p in seen)
  assert "<polyline" in memory_sparkline(seen[-1]["memory"])


def test_run_button_redraws_status_and_progress():
  ui = explorer(replace(DEFAULTS, **SMALL))
  controls, actions, status, served, live, out = ui.children
  button = actions.children[-1]
  button.click()  # what the browser's click calls (tests/test_browser.py drives a real one)
  assert "loads," in status.value and "failed" not in status.value, status.value
  assert served.value == SMALL["elements"] and live.value == ""
  assert out.outputs, "no figure"
  first = status.value
  controls.children[0].value = 1  # hint 1: one model at a time, so more loads
  button.click()
  predicted = swaps_by_hint(replace(DEFAULTS, **SMALL, hint=1))["lru"]
  assert status.value.startswith(f"{predicted[1]} loads,"), status.value
  assert status.value != first and not button.disabled
