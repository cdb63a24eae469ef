"""The cost of a swap: Beam's load, the kit's mapped load and the floor, side by side; then a
thrashing run with each load against the same run grouped (no thrashing).

    python bench/swap_cost.py [--sizes 16 64 256 1024] [--repeats 7]
                              [--thrash-pairs 5] [--thrash-mb 64] [--json] [--parts loads,thrash]

`loads`: for synthetic models of each size (`mmkit.models.SizedModel`), in rounds that take the
three loads in turn (the order rotating each round), the page cache warm:

- `beam_ms`: Beam's `PytorchModelHandlerTensor.load_model()`: build the module, `torch.load` a
  file object opened through `FileSystems`, copy into the module;
- `mmap_ms`: the kit's `MmapPytorchModelHandlerTensor.load_model()` (`mmkit.core.mmap_load`);
- `floor_ms`: `torch.load(path, mmap=True, weights_only=True)` alone: mapping the file, no module;
- `*_first_batch_ms`: the first forward pass (a batch of 32) right after each load: a mapped
  model's pages are first touched there.

Each round gives the ratios `mmap / floor` and `beam / mmap`; the table holds medians.

`thrash`: the keyed pipeline of `python -m mmkit sweep` (8 models of `--thrash-mb` MB, hint 2,
batches of 32, a zipf stream of 2,000 elements), each run in a fresh process, in pairs taken in
turn: Beam's load as it comes, the mapped load as it comes, Beam's load after a GroupByKey
(every model loaded once). A row per pair: each run's wall `seconds` and loads, and the ratios
to the grouped run. Figures: docs/fast_path.md, "Cheap swaps".
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from typing import Callable

import torch
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from mmkit import models
from mmkit.benchmark import BusyMeter
from mmkit.core.mmap_load import MmapPytorchModelHandlerTensor


def _warm_page_cache(path) -> None:
  """Reads the file once, so every load below reads it from memory, as a swap in a run does."""
  with open(path, "rb") as f:
    while f.read(1 << 24):
      pass


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
  start = time.perf_counter()
  value = fn()
  return value, 1000 * (time.perf_counter() - start)


def _first_batch_ms(model: torch.nn.Module) -> float:
  batch = torch.rand(32, 64)
  with torch.no_grad():
    return _timed(lambda: model(batch))[1]


def load_rows(megabytes: float, repeats: int) -> dict:
  """One size: median load and first-batch times of Beam's load, the mapped load and the floor."""
  path = str(models.sized_model_path(megabytes, 0))
  _warm_page_cache(path)
  params = {"megabytes": megabytes}
  loaders = {
    "beam": PytorchModelHandlerTensor(path, models.SizedModel, params).load_model,
    "mmap": MmapPytorchModelHandlerTensor(path, models.SizedModel, params).load_model,
    "floor": lambda: torch.load(path, mmap=True, weights_only=True),
  }
  times: dict[str, list[float]] = {name: [] for name in loaders}
  first: dict[str, list[float]] = {"beam": [], "mmap": []}
  with BusyMeter() as busy:
    for round_ in range(repeats):
      names = list(loaders)
      names = names[round_ % 3 :] + names[: round_ % 3]  # each load goes first in turn
      for name in names:
        loaded, ms = _timed(loaders[name])
        times[name].append(ms)
        if name in first:
          first[name].append(_first_batch_ms(loaded))
        del loaded
        gc.collect()
  median = statistics.median
  return {
    "model_mb": megabytes,
    "beam_ms": round(median(times["beam"]), 1),
    "mmap_ms": round(median(times["mmap"]), 2),
    "floor_ms": round(median(times["floor"]), 2),
    "beam_first_batch_ms": round(median(first["beam"]), 1),
    "mmap_first_batch_ms": round(median(first["mmap"]), 1),
    "mmap_over_floor": round(median(m / f for m, f in zip(times["mmap"], times["floor"])), 2),
    "beam_over_mmap": round(median(b / m for b, m in zip(times["beam"], times["mmap"])), 1),
    "rounds": repeats,
    "others_cpu": round(busy.others, 2),
  }


THRASH_RUNS = {"copy": ("copy", "none"), "mmap": ("mmap", "none"), "grouped": ("copy", "gbk")}


def thrash_pairs(megabytes: float, pairs: int) -> list[dict]:
  """Rounds of three fresh-process keyed runs: copy, mmap (as they come) and grouped."""
  from mmkit.settings import KeyedRun
  from mmkit.sweep import _run_in_fresh_process

  rows = []
  for round_ in range(pairs):
    row = {"round": round_ + 1}
    for name, (load, group) in THRASH_RUNS.items():
      run = KeyedRun(models=8, hint=2, model_mb=megabytes, load=load, group=group)
      report = _run_in_fresh_process(run)
      row[f"{name}_s"] = round(report.seconds, 2)
      row[f"{name}_loads"] = report.loads
      row[f"{name}_load_ms"] = report.load_ms
    row["copy_over_grouped"] = round(row["copy_s"] / row["grouped_s"], 2)
    row["mmap_over_grouped"] = round(row["mmap_s"] / row["grouped_s"], 2)
    rows.append(row)
    print(json.dumps(row), file=sys.stderr)  # progress: a round takes a minute or more
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=float, nargs="+", default=[16, 64, 256, 1024])
  parser.add_argument("--repeats", type=int, default=7, help="rounds of the three loads per size")
  parser.add_argument("--thrash-pairs", type=int, default=5, help="rounds of the three runs")
  parser.add_argument("--thrash-mb", type=float, default=64, help="model size of the runs")
  parser.add_argument("--parts", default="loads,thrash", help="loads, thrash or both")
  parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
  args = parser.parse_args(argv)
  parts = set(args.parts.split(","))
  if parts - {"loads", "thrash"} or not parts:
    parser.error(f"--parts takes loads, thrash or loads,thrash, got {args.parts!r}")
  if args.repeats < 1 or args.thrash_pairs < 1 or not all(size > 0 for size in args.sizes):
    parser.error("--sizes must be > 0, --repeats and --thrash-pairs >= 1")
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  out = {}
  if "loads" in parts:
    out["loads"] = [load_rows(size, args.repeats) for size in args.sizes]
  if "thrash" in parts:
    rows = thrash_pairs(args.thrash_mb, args.thrash_pairs)
    medians = {
      key: statistics.median(row[key] for row in rows)
      for key in rows[0]
      if key.endswith(("_s", "_over_grouped"))
    }
    out["thrash"] = {"model_mb": args.thrash_mb, "rounds": rows, "medians": medians}
  if args.json:
    print(json.dumps(out, indent=1))
    return 0
  import pandas as pd

  if "loads" in out:
    print(pd.DataFrame(out["loads"]).to_string(index=False))
  if "thrash" in out:
    print(f"\nthrashing run, 8 models of {args.thrash_mb:g} MB, hint 2, batches of 32, zipf:")
    print(pd.DataFrame(out["thrash"]["rounds"]).to_string(index=False))
    print("medians:", json.dumps(out["thrash"]["medians"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
