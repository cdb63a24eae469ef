"""Tracing overhead: a traced keyed run against an untraced one (goal: at most 1.03).

    python bench/tracing_overhead.py [--elements 10000] [--repeats 9] [--hints 8 4]

Same pipeline, same handlers, same in-process runner; runs alternate, and so does their
order, so drift hits both alike. Prints, per hint, the median wall times, and the median over
the pairs of traced/untraced wall
time and CPU time of this process (all of Beam's threads run in it). On a machine shared with
other work the CPU ratio is the steadier figure: other processes stretch wall time, not the
CPU this process spends. Every traced run is also checked to have lost no event: its loads
equal Beam's own load metric, every load has its release and every element is counted.
"""

import argparse
import gc
import logging
import os
import statistics
import time

from mmkit.core.cleanup import clean_up
from mmkit.core.tracer import Tracer
from mmkit.experiment import keyed_pipeline, model_handlers
from mmkit.memwatch import MemorySampler
from mmkit.pipelines import runner_options
from mmkit.report import RunReport
from mmkit.settings import KeyedRun


def cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


def timed_run(run: KeyedRun, handlers: dict, traced: bool) -> tuple[float, float]:
  """(wall seconds, CPU seconds) of one run; a traced run must account for every load."""
  start, cpu = time.perf_counter(), cpu_seconds()
  if traced:
    with Tracer(sampler=MemorySampler()) as tracer:
      pipeline = keyed_pipeline(
        run, {k: tracer.wrap(mh, k) for k, mh in handlers.items()}, runner_options(), tracer.log_dir
      )
      result = pipeline.run()
      result.wait_until_finish()
      clean_up()  # frees what Beam keeps, so every load has its release
    report = RunReport.of(tracer, result)
    served = report.counts.get("elements_out", 0)
    if not (report.loads == report.beam_loads == report.releases and served == run.elements):
      raise SystemExit(
        f"events lost: {report.loads} loads, Beam counted {report.beam_loads}, "
        f"{report.releases} releases, {served} of {run.elements} elements counted"
      )
  else:
    keyed_pipeline(run, handlers, runner_options()).run().wait_until_finish()
    clean_up()
  wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
  gc.collect()
  return wall, cpu


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--elements", type=int, default=10000)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument(
    "--hints",
    type=int,
    nargs="+",
    default=[8, 4],
    help="8: no swaps (per-element cost); 4: a swap every few batches (per-load cost)",
  )
  args = parser.parse_args()
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  for hint in args.hints:
    run = KeyedRun(models=8, hint=hint, elements=args.elements, stream="zipf", batch_size=32)
    handlers = model_handlers(run.models, run.model_mb)
    timed_run(run, handlers, traced=False)  # warm-up: imports, caches
    walls, cpus = {True: [], False: []}, {True: [], False: []}
    for repeat in range(args.repeats):
      # The order alternates too: the second run of a pair measured up to 3% slower here.
      for traced in (False, True) if repeat % 2 == 0 else (True, False):
        wall, cpu = timed_run(run, handlers, traced)
        walls[traced].append(wall)
        cpus[traced].append(cpu)
    # Each pair ran back to back: the median of the pairs' ratios is steadier than the ratio
    # of the medians when the machine's speed drifts over minutes.
    wall = statistics.median(t / u for t, u in zip(walls[True], walls[False]))
    cpu = statistics.median(t / u for t, u in zip(cpus[True], cpus[False]))
    print(
      f"keyed run, 8 models, hint={hint}, {args.elements} elements, {args.repeats} pairs: "
      f"median wall untraced {statistics.median(walls[False]):.3f} s, traced "
      f"{statistics.median(walls[True]):.3f} s; median ratio of the pairs: wall {wall:.3f}, "
      f"CPU {cpu:.3f} (goal <= 1.03)",
      flush=True,
    )


if __name__ == "__main__":
  main()
