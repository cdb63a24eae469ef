"""Time of one explorer click in this process, default settings: the run, the figure, its PNG.

    python bench/explorer_click.py [--clicks 5]

Prints wall and CPU seconds (this process and its children): on a shared machine the CPU time
moves less with the load. bench/browser_click.py measures the click in chromium (goal: 1 s),
which adds the widget's messages and the browser's drawing.
"""

import argparse
import os
import statistics
import time

import psutil

from mmkit.explorer import DEFAULTS, explore, figure_output, new_figure, peak_above_start


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
  args = parser.parse_args()
  figure = new_figure()  # the widget keeps one figure and redraws it
  explore(fig=figure)  # the first click also builds the synthetic models and warms imports
  walls, cpus = [], []
  for _ in range(args.clicks):
    start, cpu = time.perf_counter(), _cpu_seconds()
    report, _ = explore(fig=figure)
    figure_output(figure)  # the PNG the widget sends
    walls.append(time.perf_counter() - start)
    cpus.append(_cpu_seconds() - cpu)
  print(f"explorer click in-process, defaults {DEFAULTS}, load average {os.getloadavg()[0]:.1f}:")
  print(
    f"  wall median {statistics.median(walls):.2f} s (max {max(walls):.2f}), CPU median "
    f"{statistics.median(cpus):.2f} s over {args.clicks} clicks; "
    f"last run: {report.loads} loads, "
    f"peak {peak_above_start(report):.0f} MB above the start"
  )


if __name__ == "__main__":
  main()
