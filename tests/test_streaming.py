"""Keyed models on a stream: windows before GroupByKey, their latency, and loads as simulated."""

import pytest

from mmkit.core.simulate import batch_accesses, simulate_lru, stream_batches
from mmkit.experiment import run_keyed
from mmkit.settings import KeyedRun
from mmkit.streaming import (
  added_latency,
  event_times,
  latency_summary,
  open_window_elements,
  window_end,
)


@pytest.mark.parametrize("stream", ["zipf", "uniform"])
def test_measured_loads_equal_the_simulated_ones_for_every_window(stream):
  for window in (0, 1, 2, 5):
    run = KeyedRun(models=8, hint=2, elements=300, model_mb=1, stream=stream, window=window)
    report = run_keyed(run)
    summary = report.summary()
    assert summary["elements_out"] == 300 and summary["dead_letters"] == 0
    assert report.loads == summary["simulated_loads"], (stream, window)
    assert summary["optimal_loads"] <= report.loads
    # The kit's handler adds the hint once per process (Beam: once per bundle, finding 18).
    assert report.effective_cap == 2 and report.max_resident <= 2
    if window == 0:
      as_it_comes = report.loads
  assert report.loads < as_it_comes  # 5 s windows load fewer than serving as events come


def test_the_latency_a_window_adds_is_its_end_minus_the_event_time():
  assert window_end(0.0, 2) == 2 and window_end(1.999, 2) == 2 and window_end(2.0, 2) == 4
  assert added_latency([0.5, 1.5, 2.25], 2) == [1.5, 0.5, 1.75]
  assert added_latency([0.5, 1.5], 0) == [0.0, 0.0]  # served as they come
  times = [i / 100 for i in range(1000)]  # evenly over 10 s
  summary = latency_summary(times, 5)
  assert summary["latency_median_s"] == pytest.approx(2.5, abs=0.02)
  assert summary["latency_p99_s"] == pytest.approx(4.95, abs=0.02)


def test_open_windows_hold_the_elements_of_their_ticks_until_they_close():
  # Ticks of 1 s: 3 elements in [0, 1), 2 in [1, 2), 4 in [2, 3). Windows of 2 s close at 2, 4.
  times = [0.1, 0.2, 0.3, 1.1, 1.2, 2.1, 2.2, 2.3, 2.4]
  assert open_window_elements(times, 2) == 5  # the first window, full, just before it closes
  assert open_window_elements(times, 1) == 4  # a tick at a time
  assert open_window_elements(times, 0) == 0


def test_stream_batches_are_cut_per_tick_or_per_window_with_keys_in_first_seen_order():
  events = [("b", 0.1), ("a", 0.2), ("b", 0.3), ("c", 1.1), ("a", 1.2), ("b", 1.3)]
  # As they come: a bundle per tick, batches of 2 within it.
  assert stream_batches(events, 2) == [["b", "a"], ["b"], ["c", "a"], ["b"]]
  # Windows of 2 s: one window; keys in the order first seen (b, a, c), each key's together.
  assert stream_batches(events, 2, window=2) == [["b", "b"], ["b", "a"], ["a", "c"]]
  assert batch_accesses([["b", "b"], ["b", "a"]]) == ["b", "b", "a"]
  assert simulate_lru(batch_accesses(stream_batches(events, 2, window=2)), 1).loads == 3


def test_event_times_rise_and_burst_one_second_in_five():
  times = event_times(2000, rate=50, seed=1)
  assert times == sorted(times) and len(set(times)) == len(times)
  per_second = {}
  for t in times:
    per_second[int(t)] = per_second.get(int(t), 0) + 1
  full = [s for s in per_second if s < int(times[-1])]
  bursts = [per_second[s] for s in full if s % 5 == 4]
  calm = [per_second[s] for s in full if s % 5 != 4]
  assert sum(bursts) / len(bursts) > 2.5 * sum(calm) / len(calm)
