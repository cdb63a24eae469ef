"""Wall time of one explorer click with the default settings (goal: at most 2 s on 2 cores).

    python bench/explorer_click.py [--clicks 5]
"""
import argparse
import statistics
import time

from mmkit.explorer import DEFAULTS, explore


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clicks", type=int, default=5)
  args = parser.parse_args()
  explore()  # the first click also builds the synthetic models and warms imports
  times = []
  for _ in range(args.clicks):
    start = time.perf_counter()
    report, _ = explore()
    times.append(time.perf_counter() - start)
  print(f"explorer click, defaults {DEFAULTS}:")
  print(f"  median {statistics.median(times):.2f} s, max {max(times):.2f} s over {args.clicks} clicks "
        f"(goal <= 2 s); last run: {report.loads} loads, peak {report.peak_rss_mb:.0f} MB")


if __name__ == "__main__":
  main()
