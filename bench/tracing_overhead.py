"""Tracing overhead: wall time of a traced keyed run over an untraced one (goal: at most 1.03).

    python bench/tracing_overhead.py [--elements 20000] [--repeats 5]

Same pipeline, same handlers, same runner; runs alternate so drift hits both alike.
"""
import argparse
import gc
import statistics
import time

from mmkit.experiment import KeyedRun, keyed_pipeline, model_handlers
from mmkit.keyed import release_resident_models
from mmkit.tracing import Tracer


def timed_run(run: KeyedRun, traced: bool) -> float:
  handlers = model_handlers(run.models, run.model_mb)
  start = time.perf_counter()
  if traced:
    with Tracer() as tracer:
      keyed_pipeline(run, {k: tracer.wrap(mh, k) for k, mh in handlers.items()}).run().wait_until_finish()
    tracer.report()
  else:
    keyed_pipeline(run, handlers).run().wait_until_finish()
  seconds = time.perf_counter() - start
  release_resident_models()
  gc.collect()
  return seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--elements", type=int, default=10000)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--hints", type=int, nargs="+", default=[8, 4],
                      help="8: no swaps (per-element cost); 4: a swap every few batches (per-load cost)")
  args = parser.parse_args()
  for hint in args.hints:
    run = KeyedRun(models=8, hint=hint, elements=args.elements, stream="zipf", batch_size=32)
    timed_run(run, traced=False)  # warm-up: imports, caches
    times = {True: [], False: []}
    for _ in range(args.repeats):
      for traced in (False, True):
        times[traced].append(timed_run(run, traced))
    plain, traced = statistics.median(times[False]), statistics.median(times[True])
    print(f"keyed run, 8 models, hint={hint}, {args.elements} elements, median of {args.repeats}: "
          f"untraced {plain:.3f} s, traced {traced:.3f} s, ratio {traced / plain:.3f} (goal <= 1.03)", flush=True)


if __name__ == "__main__":
  main()
