"""The swap simulator against small hand-worked cases."""

import math

import pytest

from mmkit.core.simulate import (
  lru_loads_by_capacity,
  model_accesses,
  optimal_loads,
  simulate_lru,
  stack_distances,
  working_set_sizes,
)


def test_accesses_are_per_batch_first_appearance_and_follow_the_key_to_model_mapping():
  stream = ["a", "b", "a", "c", "c", "a"]
  assert model_accesses(stream, batch_size=3) == ["a", "b", "c", "a"]
  # b and c share one model (like KEY_2 and KEY_3 in Beam's docs).
  assert model_accesses(stream, 3, {"a": "A", "b": "BC", "c": "BC"}) == ["A", "BC", "BC", "A"]


def test_cycling_through_k_plus_one_models_with_room_for_k_loads_on_every_access():
  k = 3
  accesses = model_accesses([f"m{i % (k + 1)}" for i in range(40)], batch_size=1)
  swaps = simulate_lru(accesses, capacity=k)
  assert swaps.loads == 40
  assert swaps.releases == 40 - k  # every load past the first k evicts one
  assert len(swaps.resident) == k


def test_room_for_all_models_loads_each_once_and_never_releases():
  accesses = ["a", "b", "c", "a", "c", "b"] * 5
  for capacity in (3, None):
    swaps = simulate_lru(accesses, capacity)
    assert swaps.loads_by_model == {"a": 1, "b": 1, "c": 1}
    assert swaps.releases == 0


def test_lru_evicts_the_least_recently_used():
  # a b a c a b, room for 2: c evicts b (a was used after b); then b evicts c.
  swaps = simulate_lru(["a", "b", "a", "c", "a", "b"], capacity=2)
  assert swaps.loads_by_model == {"a": 1, "b": 2, "c": 1}
  assert swaps.releases_by_model == {"b": 1, "c": 1}
  assert swaps.resident == ["a", "b"]


def test_optimal_is_belady_and_never_worse_than_lru():
  accesses = ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
  # LRU with room for 2 misses every time on this cycle. MIN evicts the model used farthest
  # ahead: a b c(-b) a b(-a) c a(-c) b c -> loads a b c b a c, 6 in all.
  assert simulate_lru(accesses, 2).loads == 9
  assert optimal_loads(accesses, 2) == 6
  for capacity in (1, 2, 3):
    assert optimal_loads(accesses, capacity) <= simulate_lru(accesses, capacity).loads
  assert optimal_loads(accesses, 3) == 3


def test_stack_distances_give_lru_loads_for_every_capacity_at_once():
  accesses = ["a", "b", "a", "c", "b", "a", "d", "a"]
  assert stack_distances(accesses) == [math.inf, math.inf, 2, math.inf, 3, 3, math.inf, 2]
  by_capacity = lru_loads_by_capacity(accesses)
  assert by_capacity == {c: simulate_lru(accesses, c).loads for c in range(1, 5)}


def test_working_set_counts_distinct_models_per_window():
  assert working_set_sizes(["a", "a", "b", "c", "c", "c"], window=3) == [2, 3, 2, 1]
  assert working_set_sizes(["a"], window=5) == [1]


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_capacity_and_batch_size_are_rejected_with_a_clear_message(bad):
  with pytest.raises(ValueError, match="capacity"):
    simulate_lru(["a"], bad)
  with pytest.raises(ValueError, match="batch_size"):
    model_accesses(["a"], bad)


@pytest.mark.parametrize(
  "stream,hint,group",
  [
    ("uniform", 2, "none"),
    ("zipf", 3, "none"),
    ("cycle", 4, "none"),
    ("sorted", 1, "none"),
    ("cycle", 2, "gbk"),
    ("zipf", 2, "batches"),
    ("uniform", None, "none"),
  ],
)
def test_simulation_equals_a_real_beam_run(stream, hint, group):
  from mmkit.experiment import run_keyed
  from mmkit.settings import KeyedRun

  report = run_keyed(
    KeyedRun(models=5, hint=hint, elements=300, stream=stream, batch_size=12, group=group)
  )
  assert report.elements_out == 300
  if group == "batches":
    # GroupIntoBatches flushes its partial batches at the end in the runner's order, which the
    # simulator does not know: at most one load per model differs.
    assert abs(report.loads - report.simulated_loads) <= 5
    return
  assert report.loads == report.simulated_loads
  assert report.optimal_loads <= report.loads
  # Per model too, not only in total.
  from mmkit import data
  from mmkit.data import model_keys

  accesses = model_accesses(data.key_stream(stream, model_keys(5), 300), 12, group=group)
  assert simulate_lru(accesses, hint).loads_by_model == report.loads_by_key
