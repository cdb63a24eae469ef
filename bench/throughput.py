"""Raw torch vs the example style vs the kit's recipe (mmkit.fastpath), in elements per second.

    python bench/throughput.py [--elements 20000 200000] [--repeats 3] [--json]
    python bench/throughput.py --keyed-breakdown [--elements 200000] [--repeats 3]

The first form is `python -m mmkit bench`. The second measures where the keyed path's time
goes: the keyed recipe with 1 or 32 blocks per batch, Beam's model manager shared across
processes (Beam's default for keyed models: a server thread behind a proxy) or kept in the
process, each run against raw torch measured just before it; the round trips to the
manager and the lock files taken are counted (`docs/fast_path.md`, "Where the keyed time
goes"). The same pipelines run a second time with a model that costs next to nothing (one
64 -> 10 layer), whose time is all overhead.
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
    self.targets, self.counts, self._saved = targets, Counter({name: 0 for name in targets}), {}

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


def keyed_run(
  n: int, blocks_per_batch: int, share: bool, tiny: bool = False
) -> tuple[float, Counter]:
  """Seconds of the keyed recipe (`blocks_per_batch`, manager shared across processes or not)."""
  import time
  from multiprocessing.managers import BaseProxy

  import apache_beam as beam
  import fasteners
  from apache_beam.ml.inference.base import RunInference

  from mmkit import benchmark, fastpath
  from mmkit.models import BenchMLP, bench_model_path

  rows = fastpath.RowsOf("random", n)
  keys = [f"k{i}" for i in range(benchmark.KEYED_MODELS)]
  if tiny:
    model_class, models = TinyLinear, {k: tiny_model_path(i) for i, k in enumerate(keys)}
  else:
    model_class = BenchMLP
    models = {k: bench_model_path(i) for i, k in enumerate(keys)}
  ranges = fastpath.index_ranges(n, benchmark.BLOCK)
  elements = [(keys[b % len(keys)], r) for b, r in enumerate(ranges)]
  counting = CountCalls(
    {
      "manager_round_trips": (BaseProxy, "_callmethod"),
      "lock_files_taken": (fasteners.InterProcessLock, "acquire"),
    }
  )
  start = time.perf_counter()
  with counting:
    with beam.Pipeline(runner=fastpath.RUNNER) as p:
      handler = fastpath.keyed_block_handler(
        models, model_class, blocks_per_batch=blocks_per_batch, share_across_processes=share
      )
      _ = (
        p
        | beam.Create(elements, reshuffle=False)
        | beam.ParDo(fastpath.BuildBlock(rows, keyed=True))
        | RunInference(handler)
      )
  return time.perf_counter() - start, counting.counts


# (blocks per batch, manager shared across processes): Beam's keyed default first.
CONFIGS = ((1, True), (32, True), (1, False), (32, False))


def keyed_breakdown(n: int, repeats: int, configs=CONFIGS, tiny: bool = True) -> list[dict]:
  """Rows per configuration: median seconds (at n rows and at one block: start-up), median
  ratio to raw torch (measured just before each run), counted calls, others' CPU share."""
  from mmkit import benchmark

  torch.set_num_threads(os.cpu_count() or 1)
  benchmark.raw_torch(benchmark.BLOCK, keyed=True)  # warm-up
  for size, share in configs:
    keyed_run(benchmark.BLOCK, size, share)  # warm-up: imports, model files
  rows = []
  for tiny in (False, True) if tiny else (False,):
    results = {config: [] for config in configs}
    for _ in range(repeats):
      for config in configs:
        raw = benchmark.raw_torch(n, keyed=True) if not tiny else None
        with benchmark.BusyMeter() as busy:
          seconds, counts = keyed_run(n, *config, tiny=tiny)
        startup, _ = keyed_run(benchmark.BLOCK, *config, tiny=tiny)
        results[config].append((raw, seconds, startup, counts, busy.others))
    for (size, share), runs in results.items():
      row = {
        "model": "tiny 64->10" if tiny else "BenchMLP",
        "blocks_per_batch": size,
        "shared_manager": share,
        "elements": n,
        "seconds": round(statistics.median(run[1] for run in runs), 3),
        "startup_s": round(statistics.median(run[2] for run in runs), 3),
      }
      if not tiny:
        row["ratio_to_raw"] = round(statistics.median(run[0] / run[1] for run in runs), 3)
        row["ratios"] = [round(run[0] / run[1], 3) for run in runs]
      row.update(runs[0][3])  # the counts are the same every round
      row["others_cpu"] = round(statistics.median(run[4] for run in runs), 2)
      rows.append(row)
  return rows


def breakdown_command(argv) -> int:
  parser = argparse.ArgumentParser(description="where the keyed fast path's time goes")
  parser.add_argument("--keyed-breakdown", action="store_true")
  parser.add_argument("--elements", type=int, default=200_000)
  parser.add_argument("--repeats", type=int, default=3)
  default = [f"{size}:{'shared' if share else 'local'}" for size, share in CONFIGS]
  parser.add_argument(
    "--configs",
    nargs="+",
    default=default,
    help="BLOCKS:shared or BLOCKS:local, e.g. 1:shared 32:local (default: 4)",
  )
  parser.add_argument("--no-tiny", action="store_true", help="skip the runs with the tiny model")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  try:
    configs = [
      (int(c.split(":")[0]), {"shared": True, "local": False}[c.split(":")[1]])
      for c in args.configs
    ]
  except (ValueError, KeyError, IndexError):
    parser.error(f"--configs: each is BLOCKS:shared or BLOCKS:local, got {args.configs}")
  if args.elements < 1 or args.repeats < 1:
    parser.error("--elements and --repeats must be >= 1")
  import logging

  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  rows = keyed_breakdown(args.elements, args.repeats, configs, tiny=not args.no_tiny)
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
