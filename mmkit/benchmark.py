"""`python -m mmkit bench`: raw torch, the common example style and the kit's recipe, side by side.

Same model (64 -> 1024 -> 1024 -> 10), same inputs, elements per second and the ratio to raw
torch; with and without pipeline start-up (the time of the same pipeline on one block).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import lru_cache
from typing import Optional

import torch
from torch import nn

BLOCK = 1024
KEYED_MODELS = 8


class BenchMLP(nn.Module):
  """The issue's 3-layer MLP: 64 -> 1024 -> 1024 -> 10."""

  def __init__(self):
    super().__init__()
    self.net = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))

  def forward(self, x):
    return self.net(x)


@lru_cache(maxsize=None)
def bench_model_path(index: int = 0) -> str:
  """State dict of BenchMLP #index (seeded), written once to the temp dir."""
  path = os.path.join(tempfile.gettempdir(), f"mmkit-bench-mlp-{index}.pt")
  if not os.path.exists(path):
    torch.manual_seed(index)
    torch.save(BenchMLP().state_dict(), path)
  return path


def _load(index: int = 0) -> nn.Module:
  model = BenchMLP()
  model.load_state_dict(torch.load(bench_model_path(index), weights_only=True))
  return model.eval()


def raw_torch(n: int, keyed: bool = False) -> float:
  """Seconds for a plain batched torch loop (keyed: each block through its key's model)."""
  from mmkit.fastpath import RowsOf, index_ranges
  rows = RowsOf("random", n)
  nets = [_load(i) for i in range(KEYED_MODELS if keyed else 1)]
  start = time.perf_counter()
  with torch.no_grad():
    for b, (lo, hi) in enumerate(index_ranges(n, BLOCK)):
      nets[b % len(nets)](rows.block(lo, hi))
  return time.perf_counter() - start


def example_style(n: int) -> float:
  """Seconds for `beam.Create([tensor, ...]) | RunInference(PytorchModelHandlerTensor)`, as most examples."""
  import apache_beam as beam
  from apache_beam.ml.inference.base import RunInference
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

  from mmkit.fastpath import RowsOf
  rows = RowsOf("random", n).block(0, n)
  elements = [row.clone() for row in rows]
  start = time.perf_counter()
  with beam.Pipeline() as p:
    _ = (p | beam.Create(elements)
         | RunInference(PytorchModelHandlerTensor(state_dict_path=bench_model_path(0), model_class=BenchMLP,
                                                  model_params={}, device="CPU")))
  return time.perf_counter() - start


def kit(n: int, keyed: bool = False) -> float:
  """Seconds for the kit's recipe (mmkit.fastpath): ranges in, blocks built in the worker."""
  import apache_beam as beam
  from apache_beam.ml.inference.base import RunInference

  from mmkit import fastpath
  rows = fastpath.RowsOf("random", n)
  ranges = fastpath.index_ranges(n, BLOCK)
  start = time.perf_counter()
  with beam.Pipeline() as p:
    if keyed:
      handler = fastpath.keyed_block_handler({f"k{i}": bench_model_path(i) for i in range(KEYED_MODELS)}, BenchMLP)
      elements = [(f"k{b % KEYED_MODELS}", r) for b, r in enumerate(ranges)]
    else:
      handler, elements = fastpath.block_handler(bench_model_path(0), BenchMLP), ranges
    _ = (p | beam.Create(elements) | beam.ParDo(fastpath.BuildBlock(rows, keyed=keyed))
         | RunInference(handler))
  return time.perf_counter() - start


def run_bench(sizes=(20_000, 200_000), example_style_max: int = 20_000, progress: bool = True) -> list[dict]:
  """The benchmark's rows: one per method, pattern, size and start-up accounting."""
  from tqdm.auto import tqdm
  torch.set_num_threads(os.cpu_count() or 1)
  rows = []
  jobs = [(p, n) for p in ("single", "keyed") for n in sizes]
  for pattern, n in tqdm(jobs, desc="bench", disable=not progress, file=sys.stderr):
    keyed = pattern == "keyed"
    raw_torch(BLOCK, keyed)  # warm-up: model loads, thread pools
    raw = raw_torch(n, keyed)
    startup = kit(BLOCK, keyed)  # the same pipeline on one block: start-up and teardown
    timings = {"kit": (kit(n, keyed), startup)}
    if not keyed and n <= example_style_max:
      timings["example_style"] = (example_style(n), example_style(1))
    rows += [_row("raw_torch", pattern, n, True, raw, raw), _row("raw_torch", pattern, n, False, raw, raw)]
    for method, (total, start_cost) in timings.items():
      rows.append(_row(method, pattern, n, True, total, raw))
      rows.append(_row(method, pattern, n, False, max(total - start_cost, 1e-9), raw))
  return rows


def _row(method, pattern, n, startup_included, seconds, raw_seconds) -> dict:
  return {"method": method, "pattern": pattern, "elements": n, "startup_included": startup_included,
          "seconds": round(seconds, 3), "elements_per_s": round(n / seconds),
          "ratio_to_raw": round(raw_seconds / seconds, 3)}


def run_command(args, parser) -> int:
  if any(n < 1 for n in args.elements):
    parser.exit(2, f"python -m mmkit bench: error: --elements must all be >= 1, got {args.elements}\n")
  import logging
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  rows = run_bench(args.elements, args.example_style_max, progress=not args.no_progress)
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    import pandas as pd
    print(pd.DataFrame(rows).to_string(index=False))
  return 0


def add_parser(commands) -> None:
  p = commands.add_parser("bench", help="raw torch vs the example style vs the kit's recipe",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--elements", type=int, nargs="+", default=[20_000, 200_000], help="sizes to measure")
  p.add_argument("--example-style-max", type=int, default=20_000,
                 help="largest size to run the slow example style at (default 20000: ~14 s)")
  p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
  p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
  p.set_defaults(func=run_command)
