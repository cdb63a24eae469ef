"""The fast path's own cost, apart from torch: the recipe run with a model that costs nothing.

    python bench/kit_overhead.py [--elements 200000] [--repeats 7]

`python -m mmkit bench` compares the recipe with raw torch on a real MLP, and on a shared
machine the MLP's forward passes vary by more than the gap being measured (raw torch alone
took 2.06 to 3.24 s in 7 back-to-back runs here, other processes idle). Here the same
pipelines run a 64 -> 10 layer (`throughput.TinyLinear`), so their time is the pipeline's:
start-up (the same pipeline on one block), then everything else. The kit's overhead is that
time less a raw loop over the same blocks and tiny models. Raw torch with the real MLP is
timed in the same run, and each ratio printed is raw / (raw + overhead): what
`python -m mmkit bench` would report without the noise (the real models' loads, a few ms
each, are not in it). Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--elements", type=int, default=200_000)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  if args.elements < 1 or args.repeats < 1:
    parser.error("--elements and --repeats must be >= 1")
  import logging
  import os

  import apache_beam as beam
  import torch
  from apache_beam.ml.inference.base import RunInference
  from throughput import TinyLinear, keyed_run, tiny_model_path

  from mmkit import benchmark, fastpath

  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  torch.set_num_threads(os.cpu_count() or 1)
  n, keys = args.elements, benchmark.KEYED_MODELS
  rows = fastpath.RowsOf("random", n)
  rows.block(0, 1)  # made once, before any clock starts
  tiny = []
  for i in range(keys):
    net = TinyLinear()
    net.load_state_dict(torch.load(tiny_model_path(i), weights_only=True))
    tiny.append(net.eval())

  def raw_tiny(keyed: bool) -> float:
    start = time.perf_counter()
    with torch.no_grad():
      for b, (lo, hi) in enumerate(fastpath.index_ranges(n, benchmark.BLOCK)):
        tiny[b % keys if keyed else 0](rows.block(lo, hi))
    return time.perf_counter() - start

  def kit_single(size: int) -> float:
    ranges = fastpath.index_ranges(size, benchmark.BLOCK)
    start = time.perf_counter()
    with beam.Pipeline(runner=fastpath.RUNNER) as p:
      _ = (
        p
        | beam.Create(ranges, reshuffle=False)
        | beam.ParDo(fastpath.BuildBlock(fastpath.RowsOf("random", n)))
        | RunInference(fastpath.block_handler(tiny_model_path(0), TinyLinear))
      )
    return time.perf_counter() - start

  def kit_keyed(size: int) -> float:
    return keyed_run(size, fastpath.KEYED_BLOCKS_PER_BATCH, False, tiny=True)[0]

  measures = {
    "raw torch, tiny single": lambda: raw_tiny(False),
    "raw torch, tiny keyed": lambda: raw_tiny(True),
    "kit, tiny single": lambda: kit_single(n),
    "kit, tiny single, one block": lambda: kit_single(benchmark.BLOCK),
    "kit, tiny keyed": lambda: kit_keyed(n),
    "kit, tiny keyed, one block": lambda: kit_keyed(benchmark.BLOCK),
    "raw torch, MLP single": lambda: benchmark.raw_torch(n, False),
    "raw torch, MLP keyed": lambda: benchmark.raw_torch(n, True),
  }
  for fn in measures.values():  # warm-up: imports, thread pools, model files
    fn()
  times = {name: [] for name in measures}
  for _ in range(args.repeats):  # round by round, so drift touches every measure alike
    for name, fn in measures.items():
      times[name].append(fn())
  med = {name: statistics.median(v) for name, v in times.items()}
  for name, value in med.items():
    print(f"{name:30} {value:7.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
  for pattern in ("single", "keyed"):
    overhead = med[f"kit, tiny {pattern}"] - med[f"raw torch, tiny {pattern}"]
    startup = med[f"kit, tiny {pattern}, one block"]
    raw = times[f"raw torch, MLP {pattern}"]
    typical, fastest = statistics.median(raw), min(raw)
    print(
      f"{pattern}: the kit's overhead {overhead:.3f} s at {n:,} rows (start-up {startup:.3f} s); "
      f"ratio to raw torch without noise {typical / (typical + overhead):.3f} at raw's median, "
      f"{fastest / (fastest + overhead):.3f} at its fastest"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
