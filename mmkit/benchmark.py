"""`python -m mmkit bench`: raw torch, the example style and the kit's recipe side by side (01).

Same model (64 -> 1024 -> 1024 -> 10), same inputs, elements per second and the ratio to raw
torch; with and without pipeline start-up (the time of the same pipeline on one row).
Medians of `--repeats` rounds, each measuring raw torch and the kit back to back, with the
share of the CPUs other processes used meanwhile (`others_cpu`): the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional

__all__ = [
  "BLOCK",
  "KEYED_MODELS",
  "STARTUP_ROWS",
  "UNSEPARABLE",
  "raw_torch",
  "example_style",
  "kit",
  "BusyMeter",
  "run_bench",
  "run_command",
  "add_parser",
]

BLOCK = 1024
KEYED_MODELS = 8
STARTUP_ROWS = 1  # start-up is timed on one row: a block would also time a block's compute
# Below this share of its start-up, what is left of a run is within start-up's own noise.
UNSEPARABLE = 0.5


def raw_torch(n: int, keyed: bool = False) -> float:
  """Seconds for a plain batched torch loop (keyed: each block through its key's model)."""
  import torch

  from mmkit.fastpath import RowsOf, index_ranges
  from mmkit.models import load_bench_model

  rows = RowsOf("random", n)
  nets = [load_bench_model(i) for i in range(KEYED_MODELS if keyed else 1)]
  start = time.perf_counter()
  with torch.no_grad():
    for b, (lo, hi) in enumerate(index_ranges(n, BLOCK)):
      nets[b % len(nets)](rows.block(lo, hi))
  return time.perf_counter() - start


def example_style(n: int) -> float:
  """Seconds for `beam.Create([tensor, ...]) | RunInference(PytorchModelHandlerTensor)`."""
  import apache_beam as beam
  from apache_beam.ml.inference.base import RunInference
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

  from mmkit.fastpath import RUNNER, RowsOf
  from mmkit.models import BenchMLP, bench_model_path

  rows = RowsOf("random", n).block(0, n)
  elements = [row.clone() for row in rows]
  handler = PytorchModelHandlerTensor(
    state_dict_path=bench_model_path(0), model_class=BenchMLP, model_params={}, device="CPU"
  )
  start = time.perf_counter()
  with beam.Pipeline(runner=RUNNER) as p:  # the recipe's runner, so only the feeding differs
    _ = p | beam.Create(elements) | RunInference(handler)
  return time.perf_counter() - start


def kit(n: int, keyed: bool = False) -> float:
  """Seconds for the kit's recipe (mmkit.fastpath): ranges in, blocks built in the worker."""
  import apache_beam as beam
  from apache_beam.ml.inference.base import RunInference

  from mmkit import fastpath
  from mmkit.models import BenchMLP, bench_model_path

  rows = fastpath.RowsOf("random", n)
  ranges = fastpath.index_ranges(n, BLOCK)
  start = time.perf_counter()
  with beam.Pipeline(runner=fastpath.RUNNER) as p:
    if keyed:
      models = {f"k{i}": bench_model_path(i) for i in range(KEYED_MODELS)}
      handler = fastpath.keyed_block_handler(models, BenchMLP)
      elements = [(f"k{b % KEYED_MODELS}", r) for b, r in enumerate(ranges)]
    else:
      handler, elements = fastpath.block_handler(bench_model_path(0), BenchMLP), ranges
    # No Reshuffle after Create: it spreads elements over workers, and this in-process
    # runner has one; it would add a GroupByKey stage to every run's start-up.
    _ = (
      p
      | beam.Create(elements, reshuffle=False)
      | beam.ParDo(fastpath.BuildBlock(rows, keyed=keyed))
      | RunInference(handler)
    )
  return time.perf_counter() - start


class BusyMeter:
  """Share of the CPUs other processes used while a measurement ran (0..1), as `.others`.

  The machine may be shared: a figure measured while others took half of it says so.
  """

  def __enter__(self) -> "BusyMeter":
    import psutil

    self._me = psutil.Process()
    self._t0, self._cpu0, self._mine0 = time.perf_counter(), self._busy(), self._mine()
    return self

  def __exit__(self, *exc) -> None:
    import psutil

    wall = time.perf_counter() - self._t0
    others = (self._busy() - self._cpu0) - (self._mine() - self._mine0)
    self.others = min(max(others / (wall * (psutil.cpu_count() or 1)), 0.0), 1.0)

  @staticmethod
  def _busy() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)

  def _mine(self) -> float:
    times = self._me.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _timed(fn, *args) -> tuple[float, float]:
  """(seconds, share of the CPUs other processes used meanwhile)."""
  with BusyMeter() as busy:
    seconds = fn(*args)
  return seconds, busy.others


def run_bench(
  sizes=(20_000, 200_000),
  example_style_max: int = 20_000,
  progress: bool = True,
  repeats: int = 1,
  threads: Optional[int] = None,
  patterns=("single", "keyed"),
) -> list[dict]:
  """The benchmark's rows: one per method, pattern, size and start-up accounting.

  Each of `repeats` rounds measures raw torch and then the kit, back to back, so a ratio
  compares two runs that saw the same load on a shared machine; a row holds the medians
  (seconds, and the ratio over the rounds' ratios) and `others_cpu`, the median share of the
  CPUs that other processes took meanwhile. `threads`: torch's threads (default: one per CPU);
  `patterns`: "single", "keyed" or both.
  """
  if not patterns or set(patterns) - {"single", "keyed"}:
    raise ValueError(f"patterns must be among 'single', 'keyed', got {patterns!r}.")
  import torch
  from tqdm.auto import tqdm

  from mmkit.fastpath import RowsOf

  torch.set_num_threads(threads or os.cpu_count() or 1)
  rows = []
  jobs = [(p, n) for p in ("single", "keyed") if p in patterns for n in sizes]
  for pattern, n in tqdm(jobs, desc="bench", disable=not progress, file=sys.stderr):
    keyed = pattern == "keyed"
    raw_torch(BLOCK, keyed)  # warm-up: model loads, thread pools
    RowsOf("random", n).block(0, 1)  # the rows, made once per process: not in round 1's raw time
    rounds = []
    for _ in range(repeats):
      raw = _timed(raw_torch, n, keyed)
      startup = kit(STARTUP_ROWS, keyed)  # the same pipeline on one row: start-up, teardown
      timings = {"kit": (_timed(kit, n, keyed), startup)}
      if not keyed and n <= example_style_max:
        timings["example_style"] = (_timed(example_style, n), example_style(STARTUP_ROWS))
      rounds.append((raw, timings))
    rows += _rows(pattern, n, rounds)
  return rows


def _rows(pattern: str, n: int, rounds: list) -> list[dict]:
  """Median rows over rounds of (raw (seconds, others), {method: ((seconds, others), start-up)}).

  Without start-up, a method's time is its median minus its median start-up, against raw
  torch's median: a start-up run subtracted round by round can exceed a noisy round's total.
  Where that is under half the start-up, the run was mostly start-up, and the row holds None:
  at 2,000 rows the recipe computes for about 0.01 s after 0.09 s of start-up.
  `best_ratio` (start-up included) is raw torch's fastest round over the method's fastest:
  other work only ever slows a run, so the fastest rounds are the ones least disturbed.
  """
  from statistics import median

  raws = [raw for raw, _ in rounds]
  rows = [
    _row("raw_torch", pattern, n, included, raws, [1.0] * len(raws), 1.0)
    for included in (True, False)
  ]
  raw_best = min(s for s, _ in raws)
  raw_median = median(s for s, _ in raws)
  for method in rounds[0][1]:
    totals = [timings[method][0] for _, timings in rounds]
    ratios = [raw_s / s for (raw_s, _), (s, _) in zip(raws, totals)]
    rows.append(
      _row(method, pattern, n, True, totals, ratios, raw_best / min(s for s, _ in totals))
    )
    start_cost = median(timings[method][1] for _, timings in rounds)
    bare = median(s for s, _ in totals) - start_cost
    others = median(o for _, o in totals)
    separable = bare > 0 and bare >= start_cost * UNSEPARABLE
    ratios = [raw_median / bare] if separable else []  # mostly start-up: no figure, not noise
    rows.append(_row(method, pattern, n, False, [(bare, others)], ratios))
  return rows


def _row(method, pattern, n, startup_included, measured, ratios, best_ratio=None) -> dict:
  """One row; with no `ratios` (a run that was mostly start-up) its figures are None."""
  from statistics import median

  seconds = median(s for s, _ in measured) if ratios else None
  return {
    "method": method,
    "pattern": pattern,
    "elements": n,
    "startup_included": startup_included,
    "seconds": None if seconds is None else float(f"{seconds:.4g}"),
    "elements_per_s": None if seconds is None else round(n / seconds),
    "ratio_to_raw": round(median(ratios), 3) if ratios else None,
    "ratios": [round(r, 3) for r in ratios],
    "best_ratio": None if best_ratio is None else round(best_ratio, 3),
    "others_cpu": round(median(o for _, o in measured), 2),
  }


def run_command(args, parser) -> int:
  if any(n < 1 for n in args.elements):
    parser.exit(
      2, f"python -m mmkit bench: error: --elements must all be >= 1, got {args.elements}\n"
    )
  if args.threads is not None and args.threads < 1:
    parser.exit(2, f"python -m mmkit bench: error: --threads must be >= 1, got {args.threads}\n")
  if args.repeats < 1:
    parser.exit(2, f"python -m mmkit bench: error: --repeats must be >= 1, got {args.repeats}\n")
  import logging

  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  rows = run_bench(
    args.elements,
    args.example_style_max,
    progress=not args.no_progress,
    repeats=args.repeats,
    threads=args.threads,
  )
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    import pandas as pd

    print(pd.DataFrame(rows).drop(columns="ratios").to_string(index=False))
  return 0


def add_parser(commands) -> None:
  p = commands.add_parser(
    "bench",
    help="raw torch vs the example style vs the kit's recipe",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "--elements", type=int, nargs="+", default=[20_000, 200_000], help="sizes to measure"
  )
  p.add_argument(
    "--example-style-max",
    type=int,
    default=20_000,
    help="largest size to run the slow example style at (default 20000: ~14 s)",
  )
  p.add_argument(
    "--repeats",
    type=int,
    default=3,
    help="rounds of raw torch then the kit; rows hold the medians (default 3)",
  )
  p.add_argument(
    "--threads",
    type=int,
    default=None,
    help="torch threads (default: one per CPU); 1 is steadier on a shared machine",
  )
  p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
  p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
  p.set_defaults(func=run_command)
