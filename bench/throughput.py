"""Raw torch vs the example style vs the kit's recipe (mmkit.fastpath), in elements per second.

    python bench/throughput.py [--elements 20000 200000] [--repeats 3] [--json]
    python bench/throughput.py --keyed-breakdown [--elements 200000] [--repeats 3]

The first form is `python -m mmkit bench`. The second measures where the keyed path's time
goes: the keyed recipe with 1, 8 and 32 blocks per batch, each round against raw torch
measured just before, with the round trips to Beam's model manager counted (each is a
request to a server thread: `docs/fast_path.md`, "Where the keyed time goes"), and the same
pipeline with a model that costs nothing (a 64 -> 10 layer), whose time is all overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import Counter

import torch
from torch import nn

from mmkit.__main__ import main


class TinyLinear(nn.Module):
  """64 -> 10: a forward pass that costs next to nothing, so a run's time is the pipeline's."""

  def __init__(self):
    super().__init__()
    self.net = nn.Linear(64, 10)

  def forward(self, x):
    return self.net(x)


def tiny_model_path(index: int) -> str:
  path = os.path.join(tempfile.gettempdir(), f"mmkit-bench-tiny-{index}.pt")
  if not os.path.exists(path):
    torch.manual_seed(index)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    os.close(fd)
    torch.save(TinyLinear().state_dict(), tmp)
    os.replace(tmp, path)
  return path


class CountCalls:
  """Counts calls of a few functions (patched for the duration of a `with`)."""

  def __init__(self, targets: dict):
    self.targets, self.counts, self._saved = targets, Counter(), {}

  def __enter__(self) -> "CountCalls":
    for name, (owner, attr) in self.targets.items():
      original = getattr(owner, attr)
      self._saved[name] = (owner, attr, original)

      def counted(*args, _name=name, _original=original, **kwargs):
        self.counts[_name] += 1
        return _original(*args, **kwargs)
      setattr(owner, attr, counted)
    return self

  def __exit__(self, *exc) -> None:
    for owner, attr, original in self._saved.values():
      setattr(owner, attr, original)


def keyed_run(n: int, blocks_per_batch: int, tiny: bool = False) -> tuple[float, Counter]:
  """Seconds of the keyed recipe at `blocks_per_batch`, and the calls counted meanwhile."""
  import time
  from multiprocessing.managers import BaseProxy

  import apache_beam as beam
  import fasteners
  from apache_beam.ml.inference.base import RunInference

  from mmkit import benchmark, fastpath
  rows = fastpath.RowsOf("random", n)
  keys = [f"k{i}" for i in range(benchmark.KEYED_MODELS)]
  if tiny:
    model_class, models = TinyLinear, {k: tiny_model_path(i) for i, k in enumerate(keys)}
  else:
    model_class = benchmark.BenchMLP
    models = {k: benchmark.bench_model_path(i) for i, k in enumerate(keys)}
  ranges = fastpath.index_ranges(n, benchmark.BLOCK)
  elements = [(keys[b % len(keys)], r) for b, r in enumerate(ranges)]
  counting = CountCalls({"manager_round_trips": (BaseProxy, "_callmethod"),
                         "lock_files_taken": (fasteners.InterProcessLock, "acquire")})
  start = time.perf_counter()
  with counting:
    with beam.Pipeline() as p:
      handler = fastpath.keyed_block_handler(models, model_class, blocks_per_batch=blocks_per_batch)
      _ = (p | beam.Create(elements, reshuffle=False)
           | beam.ParDo(fastpath.BuildBlock(rows, keyed=True)) | RunInference(handler))
  return time.perf_counter() - start, counting.counts


def keyed_breakdown(n: int, repeats: int, sizes=(1, 8, 32)) -> list[dict]:
  """Rows per blocks-per-batch: median seconds, median ratio to raw torch, counted calls."""
  from mmkit import benchmark
  torch.set_num_threads(os.cpu_count() or 1)
  benchmark.raw_torch(benchmark.BLOCK, keyed=True)  # warm-up
  for size in sizes:
    keyed_run(benchmark.BLOCK, size)  # warm-up: imports, model files
  rows = []
  for tiny in (False, True):
    results = {size: [] for size in sizes}
    for _ in range(repeats):
      for size in sizes:
        raw = benchmark.raw_torch(n, keyed=True) if not tiny else None
        with benchmark.BusyMeter() as busy:
          seconds, counts = keyed_run(n, size, tiny)
        results[size].append((raw, seconds, counts, busy.others))
    for size, runs in results.items():
      row = {"model": "tiny 64->10" if tiny else "BenchMLP", "blocks_per_batch": size,
             "elements": n, "seconds": round(statistics.median(s for _, s, _, _ in runs), 3)}
      if not tiny:
        row["ratio_to_raw"] = round(statistics.median(r / s for r, s, _, _ in runs), 3)
        row["ratios"] = [round(r / s, 3) for r, s, _, _ in runs]
      row.update(runs[0][2])  # the counts are the same every round
      row["others_cpu"] = round(statistics.median(o for _, _, _, o in runs), 2)
      rows.append(row)
  return rows


def breakdown_command(argv) -> int:
  parser = argparse.ArgumentParser(description="where the keyed fast path's time goes")
  parser.add_argument("--keyed-breakdown", action="store_true")
  parser.add_argument("--elements", type=int, default=200_000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  if args.elements < 1 or args.repeats < 1:
    parser.error("--elements and --repeats must be >= 1")
  import logging
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  rows = keyed_breakdown(args.elements, args.repeats)
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    import pandas as pd
    print(pd.DataFrame(rows).drop(columns="ratios").to_string(index=False))
  return 0


if __name__ == "__main__":
  if "--keyed-breakdown" in sys.argv[1:]:
    sys.exit(breakdown_command(sys.argv[1:]))
  sys.exit(main(["bench", *sys.argv[1:]]))
