"""Why the explorer's defaults: one traced run per hint, loads and memory above the start.

    python bench/explorer_defaults.py [--repeats 3] [--model-mb 40] [--models 4] ...

Prints, for every hint from 1 to the number of models, the loads Beam's LRU predicts
(`mmkit.core.simulate`, no Beam), the loads measured in a real traced run, the memory above the
run's start when the pipeline ended (the models Beam held: hint x model size) and at its peak (one
model more while a load copies its state dict), and the run's seconds (medians over `--repeats`
runs, hints interleaved so they share the machine's load).
"""

import argparse
import dataclasses
import os
import statistics

from mmkit.explorer import DEFAULTS, explore, held_at_end, peak_above_start, swaps_by_hint


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  for name in ("models", "elements", "batch_size"):
    parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(DEFAULTS, name))
  parser.add_argument("--model-mb", type=float, default=DEFAULTS.model_mb)
  parser.add_argument("--stream", default=DEFAULTS.stream)
  args = parser.parse_args()
  settings = dict(
    models=args.models,
    elements=args.elements,
    batch_size=args.batch_size,
    model_mb=args.model_mb,
    stream=args.stream,
  )
  hints = range(1, args.models + 1)
  run = dataclasses.replace(DEFAULTS, **settings)
  predicted = swaps_by_hint(run)["lru"]
  explore(dataclasses.replace(run, hint=args.models))  # warm-up: imports, the models' files
  rows = {h: [] for h in hints}
  for _ in range(args.repeats):
    for h in hints:
      report, _ = explore(dataclasses.replace(run, hint=h))
      rows[h].append((report.loads, held_at_end(report), peak_above_start(report), report.seconds))
  print(f"explorer settings {settings}, medians of {args.repeats} runs per hint:")
  print(
    "  hint  loads (LRU predicted)  MB above the start: held at the end (hint x model MB)"
    "  peak  seconds"
  )
  for h in hints:
    loads, held, peak, seconds = (statistics.median(r[i] for r in rows[h]) for i in range(4))
    print(
      f"  {h:4}  {loads:5.0f} ({predicted[h]:3})          {held:6.0f} ({h * args.model_mb:6.0f})"
      f"                          {peak:6.0f}  {seconds:6.2f}"
    )
  print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
  main()
