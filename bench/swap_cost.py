"""The cost of a swap: how long Beam takes to load a keyed model, against what it cannot avoid.

    python bench/swap_cost.py [--sizes 16 64 256] [--loads 8] [--repeats 8] [--json]

For synthetic models of each size (`mmkit.models.SizedModel`, `sized_model_path`):

- `load_ms`: Beam loading a keyed model, from the kit's trace (`mmkit.tracing` load events
  carry "seconds"). The run is `mmkit.experiment.run_keyed` with 2 models, hint 1, a
  `cycle` stream and batches of 1: every batch evicts one model and loads the other.
- `floor_ms`: `torch.load` of the same state dict file, from the page cache.
- `build_ms`: constructing the model class, as Beam does before loading the state dict
  (SizedModel skips random init; `build_init_ms` is the same layers randomly initialised).
- `copy_ms`: `load_state_dict`, copying the loaded tensors into a freshly built module
  (its memory is first touched then).
- `stream_load_ms`: `torch.load` of a file object opened through Beam's `FileSystems`, as
  Beam's PyTorch handler does (the floor reads a path).

Beam's load is about build + stream_load + copy. Medians over `--loads` traced loads and
`--repeats` timings; the machine may be shared, so `others_cpu` says how much of it other
processes used meanwhile. Figures: docs/fast_path.md, "The cost of a swap".
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from typing import Callable

import torch

from mmkit import models
from mmkit.benchmark import BusyMeter


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of `fn` in ms."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def _warm_page_cache(path) -> None:
  """Reads the file once, so every timing below reads it from memory, as Beam's loads do."""
  with open(path, "rb") as f:
    while f.read(1 << 24):
      pass


def beam_load_ms(megabytes: float, loads: int) -> list[float]:
  """The `seconds` of every model load a thrashing keyed run traced, in ms."""
  from mmkit.experiment import KeyedRun, run_keyed

  run = KeyedRun(models=2, hint=1, elements=loads, stream="cycle", model_mb=megabytes, batch_size=1)
  report = run_keyed(run)
  return [1000 * e["seconds"] for e in report.events if e["event"] == "load"]


def _copy_ms(megabytes: float, state: dict, repeats: int) -> float:
  """Median ms of `load_state_dict` into a new module (its memory is first touched then)."""
  times = []
  for _ in range(repeats):
    module = models.SizedModel(megabytes)
    start = time.perf_counter()
    module.load_state_dict(state)
    times.append(time.perf_counter() - start)
    del module
  return 1000 * statistics.median(times)


def swap_row(megabytes: float, loads: int, repeats: int) -> dict:
  """One table row: Beam's load, the torch.load floor and building the module, in ms (medians)."""
  from apache_beam.io.filesystems import FileSystems

  paths = [str(models.sized_model_path(megabytes, index)) for index in range(2)]
  for path in paths:
    _warm_page_cache(path)

  def load_state():
    return torch.load(paths[0], map_location="cpu", weights_only=True)

  def load_state_as_beam_does():
    # Beam's PyTorch handler hands torch.load a file object opened through FileSystems.
    with FileSystems.open(paths[0], "rb") as f:
      return torch.load(f, map_location="cpu", weights_only=True)

  with BusyMeter() as busy:
    beam_ms = beam_load_ms(megabytes, loads)
    floor_ms = _median_ms(load_state, repeats)
    stream_ms = _median_ms(load_state_as_beam_does, repeats)
    build_ms = _median_ms(lambda: models.SizedModel(megabytes), repeats)
    # Random init of big layers is slow: fewer timings.
    build_init_ms = _median_ms(
      lambda: models.SizedModel(megabytes, initialize=True), max(repeats // 4, 1)
    )
    copy_ms = _copy_ms(megabytes, load_state(), repeats)
  load_ms = statistics.median(beam_ms)
  return {
    "model_mb": megabytes,
    "loads": len(beam_ms),
    "load_ms": round(load_ms, 1),
    "floor_ms": round(floor_ms, 1),
    "build_ms": round(build_ms, 2),
    "copy_ms": round(copy_ms, 1),
    "stream_load_ms": round(stream_ms, 1),
    "build_init_ms": round(build_init_ms, 1),
    "load_over_floor": round(load_ms / floor_ms, 2),
    "others_cpu": round(busy.others, 2),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--sizes", type=float, nargs="+", default=[16, 64, 256], help="model sizes in MB"
  )
  parser.add_argument("--loads", type=int, default=8, help="traced Beam loads per size")
  parser.add_argument(
    "--repeats", type=int, default=8, help="timings of torch.load, build and copy"
  )
  parser.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
  args = parser.parse_args(argv)
  if args.loads < 1 or args.repeats < 1 or any(not size > 0 for size in args.sizes):
    parser.error("--sizes must be > 0, --loads and --repeats >= 1")
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  rows = [swap_row(size, args.loads, args.repeats) for size in args.sizes]
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    import pandas as pd

    print(pd.DataFrame(rows).to_string(index=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
