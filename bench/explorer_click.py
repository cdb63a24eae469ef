"""Time of one explorer click in this process, default settings: the run, the figure, its PNG.

    python bench/explorer_click.py [--clicks 5] [--without nagle,gc]

Prints wall and CPU seconds (this process and its children): on a shared machine the CPU time
moves less with the load. `--without` also times clicks without the explorer's fixes, in turn
with the shipped ones (so both see the same load): `nagle`, Nagle's algorithm left on for Beam's
model proxies (`mmkit.core.beam_private.tcp_nodelay`, which `run_keyed` applies); `gc`, the
cleanup's collection over every object of the process (`_young_objects_only`).
bench/browser_click.py measures the click in chromium (goal: 1 s), which adds the widget's
messages and the browser's drawing.
"""

import argparse
import contextlib
import os
import statistics
import time

import psutil

from mmkit import experiment, explorer
from mmkit.explorer import DEFAULTS, explore, figure_output, new_figure, peak_above_start

# Each fix: the (module, name) pairs that apply it.
FIXES = {
  "nagle": [(experiment, "tcp_nodelay")],
  "gc": [(explorer, "_young_objects_only")],
}


def _cpu_seconds() -> float:
  me = psutil.Process()
  total = sum(me.cpu_times()[:2])
  for child in me.children(recursive=True):
    try:
      total += sum(child.cpu_times()[:2])
    except psutil.Error:
      pass
  return total


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clicks", type=int, default=5)
  parser.add_argument("--without", default="", help=f"comma-separated: {', '.join(FIXES)}")
  args = parser.parse_args()
  off = [name for name in args.without.split(",") if name]
  unknown = set(off) - set(FIXES)
  if unknown:
    parser.error(f"unknown fix {', '.join(sorted(unknown))}: use {', '.join(FIXES)}")
  shipped = {(module, attr): getattr(module, attr) for name in off for module, attr in FIXES[name]}
  variants = {"as shipped": {}, **({f"without {'+'.join(off)}": shipped} if off else {})}
  figure = new_figure()  # the widget keeps one figure and redraws it
  explore(fig=figure)  # the first click also builds the synthetic models and warms imports
  walls = {name: [] for name in variants}
  cpus = {name: [] for name in variants}
  for _ in range(args.clicks):
    for name, removed in variants.items():  # in turn: both see the same background load
      for module, attr in removed:
        setattr(module, attr, contextlib.nullcontext)
      start, cpu = time.perf_counter(), _cpu_seconds()
      report, _ = explore(fig=figure)
      figure_output(figure)  # the PNG the widget sends
      walls[name].append(time.perf_counter() - start)
      cpus[name].append(_cpu_seconds() - cpu)
      for (module, attr), function in removed.items():
        setattr(module, attr, function)
  print(f"explorer click in-process, defaults {DEFAULTS}, load average {os.getloadavg()[0]:.1f}:")
  for name in variants:
    print(
      f"  {name:18} wall median {statistics.median(walls[name]):.2f} s "
      f"(max {max(walls[name]):.2f}), CPU median {statistics.median(cpus[name]):.2f} s "
      f"over {args.clicks} clicks"
    )
  print(f"  last run: {report.loads} loads, peak {peak_above_start(report):.0f} MB above the start")


if __name__ == "__main__":
  main()
