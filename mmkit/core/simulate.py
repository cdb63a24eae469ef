"""Predict model swaps without running Beam: LRU replay, Belady's optimum, stack distances (04, 05).

Copy this file alone into a project (standard library only); `python simulate.py` runs its
example.

`KeyedModelHandler` serves a batch by splitting it by model, in order of each model's
first appearance in the batch; every model it needs is "loaded" (made most recently
used, or loaded if absent). With `max_models_per_worker_hint=h` the least recently used
model is released when an (h+1)-th is needed. Replaying that on the sequence of model
accesses gives the exact load count of an in-memory DirectRunner run with fixed batches.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Optional, Sequence

__all__ = [
  "arrival_batches",
  "stream_batches",
  "batch_accesses",
  "model_accesses",
  "SwapCount",
  "simulate_lru",
  "optimal_loads",
  "stack_distances",
  "lru_loads_by_capacity",
  "working_set_sizes",
]


def arrival_batches(
  stream: Sequence[Hashable], batch_size: int, group: str = "none"
) -> list[list[Hashable]]:
  """The batches of keys RunInference sees on the in-memory runner, for each grouping.

  `none`: consecutive slices of the stream. `gbk`: a GroupByKey makes each key's elements
  contiguous (key order is the runner's; it does not change the counts). `batches`:
  GroupIntoBatches emits a key's batch when it fills, the rest when the input ends (in the
  runner's order, which this cannot know: up to one load per model may differ there).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if group == "none":
    return [list(stream[i : i + batch_size]) for i in range(0, len(stream), batch_size)]
  if group == "gbk":
    by_key: dict = {}
    for key in stream:
      by_key.setdefault(key, []).append(key)
    flat = [k for keys in by_key.values() for k in keys]
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
  if group == "batches":
    buffers: dict = {}
    batches = []
    for key in stream:
      buffers.setdefault(key, []).append(key)
      if len(buffers[key]) == batch_size:
        batches.append(buffers.pop(key))
    return batches + list(buffers.values())
  raise ValueError(f"unknown group {group!r}: use one of none, gbk, batches.")


def stream_batches(
  events: Sequence[tuple[Hashable, float]],
  batch_size: int,
  window: Optional[float] = None,
  tick: float = 1.0,
) -> list[list[Hashable]]:
  """The batches of keys RunInference makes of a stream of (key, event time) pairs (07).

  The stream is delivered a `tick` of event time at a time, the watermark advanced to the end
  of each tick (as `mmkit.streaming.replay_stream` replays it). Without a `window`, each delivery
  is a bundle, cut into batches of `batch_size` (a bundle's last batch may be shorter). With
  fixed windows of `window` seconds and a GroupByKey, a window's elements wait until the
  watermark passes its end; then they come out key by key, the keys in the order the
  GroupByKey first saw them anywhere in the stream and each key's elements in arrival order
  (Beam 2.77's DirectRunner), and are cut into batches within the window.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  deliveries: dict[int, list] = {}
  for key, t in events:
    deliveries.setdefault(math.floor(t / tick), []).append((key, t))
  if window is None:
    return [
      [key for key, _ in bundle[i : i + batch_size]]
      for _, bundle in sorted(deliveries.items())
      for i in range(0, len(bundle), batch_size)
    ]
  first_seen: dict = {}
  open_windows: dict[int, dict] = {}  # window index -> key -> its elements, in arrival order
  batches: list[list[Hashable]] = []
  for tick_index, bundle in sorted(deliveries.items()):
    for key, t in bundle:
      first_seen.setdefault(key, len(first_seen))
      open_windows.setdefault(math.floor(t / window), {}).setdefault(key, []).append(key)
    watermark = (tick_index + 1) * tick
    for index in sorted(open_windows):
      if (index + 1) * window > watermark + 1e-9:
        break
      by_key = open_windows.pop(index)
      flat = [k for key in sorted(by_key, key=first_seen.get) for k in by_key[key]]
      batches += [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
  for index in sorted(open_windows):  # the rest, when the watermark reaches infinity
    by_key = open_windows[index]
    flat = [k for key in sorted(by_key, key=first_seen.get) for k in by_key[key]]
    batches += [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
  return batches


def batch_accesses(batches: Iterable[Sequence[Hashable]]) -> list[Hashable]:
  """The models a keyed handler asks for over `batches`: each once per batch, first seen first."""
  return [key for batch in batches for key in dict.fromkeys(batch)]


def model_accesses(
  stream: Sequence[Hashable],
  batch_size: int,
  key_to_model: Optional[Mapping[Hashable, Hashable]] = None,
  group: str = "none",
) -> list[Hashable]:
  """The models a keyed handler asks for, in order: each model once per batch, first seen first."""
  to_model = key_to_model.__getitem__ if key_to_model is not None else (lambda k: k)
  accesses = []
  for batch in arrival_batches(stream, batch_size, group):
    accesses += dict.fromkeys(to_model(k) for k in batch)
  return accesses


@dataclass
class SwapCount:
  """Loads and releases (evictions) per model of one replay; `resident` is what is left loaded."""

  loads_by_model: dict = field(default_factory=dict)
  releases_by_model: dict = field(default_factory=dict)
  resident: list = field(default_factory=list)

  @property
  def loads(self) -> int:
    return sum(self.loads_by_model.values())

  @property
  def releases(self) -> int:
    return sum(self.releases_by_model.values())


def simulate_lru(accesses: Iterable[Hashable], capacity: Optional[int]) -> SwapCount:
  """Replays Beam's LRU with room for `capacity` models (None: unlimited, as with no hint)."""
  if capacity is not None and capacity < 1:
    raise ValueError(f"capacity (the hint) must be >= 1 or None, got {capacity}.")
  cache: OrderedDict = OrderedDict()
  loads: dict = defaultdict(int)
  releases: dict = defaultdict(int)
  for model in accesses:
    if model in cache:
      cache.move_to_end(model)
      continue
    cache[model] = True
    if capacity is not None and len(cache) > capacity:
      evicted, _ = cache.popitem(last=False)
      releases[evicted] += 1
    loads[model] += 1
  return SwapCount(
    dict(sorted(loads.items(), key=str)), dict(sorted(releases.items(), key=str)), list(cache)
  )


def optimal_loads(accesses: Sequence[Hashable], capacity: int) -> int:
  """Belady's MIN: the fewest loads any eviction policy needs with room for `capacity`."""
  if capacity < 1:
    raise ValueError(f"capacity must be >= 1, got {capacity}.")
  uses: dict = defaultdict(list)
  for i, model in enumerate(accesses):
    uses[model].append(i)

  def next_use(model, i):
    positions = uses[model]
    j = bisect.bisect_right(positions, i)
    return positions[j] if j < len(positions) else math.inf

  cache: set = set()
  loads = 0
  for i, model in enumerate(accesses):
    if model in cache:
      continue
    loads += 1
    if len(cache) >= capacity:
      cache.remove(max(cache, key=lambda m: next_use(m, i)))
    cache.add(model)
  return loads


def stack_distances(accesses: Iterable[Hashable]) -> list[float]:
  """Mattson's LRU stack distance of each access: 1 = most recently used, inf = first use."""
  stack: list = []  # most recently used last
  distances = []
  for model in accesses:
    if model in stack:
      distances.append(len(stack) - stack.index(model))
      stack.remove(model)
    else:
      distances.append(math.inf)
    stack.append(model)
  return distances


def lru_loads_by_capacity(
  accesses: Sequence[Hashable], capacities: Optional[Iterable[int]] = None
) -> dict[int, int]:
  """LRU loads for every capacity from one pass: a miss when the stack distance > capacity."""
  distances = stack_distances(accesses)
  if capacities is None:
    capacities = range(1, len(set(accesses)) + 1)
  return {c: sum(d > c for d in distances) for c in capacities}


def working_set_sizes(accesses: Sequence[Hashable], window: int) -> list[int]:
  """Distinct models in each window of `window` accesses in a row: above the hint, LRU thrashes."""
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}.")
  return [len(set(accesses[i : i + window])) for i in range(max(1, len(accesses) - window + 1))]


if __name__ == "__main__":
  import json

  # Four models' keys round robin, batches of 2, room for two models: LRU's worst case.
  stream = ["a", "b", "c", "d"] * 8
  accesses = model_accesses(stream, batch_size=2)
  print(
    json.dumps(
      {
        "lru_loads": simulate_lru(accesses, capacity=2).loads,
        "optimal_loads": optimal_loads(accesses, capacity=2),
        "grouped_loads": simulate_lru(model_accesses(stream, 2, group="gbk"), capacity=2).loads,
      }
    )
  )
