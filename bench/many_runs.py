"""Many runs in one process, as a notebook makes them: does anything pile up?

    nice -n 5 python bench/many_runs.py [--runs 100] [--warmup 6] [--json]

Runs the kit's keyed run over and over in this process, the kinds taking turns: thrashing
(hint 1, a round-robin stream), grouped (GroupByKey; GroupIntoBatches), interrupted (SIGINT
to this process mid-run, as the stop button sends), failed (its memory limit passed mid-run;
a model file corrupted after validation). After a warm-up round of each kind, prints what grew:
resident memory, threads, open files and sockets, child processes, and what was left in the
temp dir (the runs get a temp dir of their own: Beam's `beam-temp*` and `beam-pipeline-temp*`
dirs, the kit's trace dirs, Beam's rendezvous files). `tests/test_faults.py` runs a short
version and asserts nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time

# Before Beam or the kit import: every temp file of the runs (and of their processes) lands here.
RUNS_TEMP = tempfile.mkdtemp(prefix="mmkit-many-runs-")
tempfile.tempdir = os.environ["TMPDIR"] = RUNS_TEMP
os.environ["MMKIT_CACHE"] = os.path.join(RUNS_TEMP, "cache")  # its own synthetic models

import psutil  # noqa: E402

from mmkit import models  # noqa: E402
from mmkit.experiment import run_keyed  # noqa: E402
from mmkit.faults import RunFailed  # noqa: E402
from mmkit.settings import KeyedRun  # noqa: E402

KINDS = ("thrashing", "gbk", "interrupted", "memory-limit", "batches", "file-gone")


def one_run(kind: str) -> str:
  """Runs one run of `kind`; returns how it ended ('finished', 'interrupted', the error's type)."""
  quick = dict(models=4, elements=48, stream="cycle", batch_size=4)
  if kind == "thrashing":
    run = KeyedRun(hint=1, **quick)
  elif kind in ("gbk", "batches"):
    run = KeyedRun(hint=1, group=kind, **quick)
  elif kind == "interrupted":
    run = KeyedRun(models=4, hint=1, elements=20000, stream="cycle", batch_size=1)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
  elif kind == "memory-limit":  # 4 synthetic 16 MB models, the limit 40 MB above where we are
    limit = psutil.Process().memory_info().rss / 2**20 + 40
    run = KeyedRun(
      models=4,
      hint=None,
      elements=64,
      stream="cycle",
      model_mb=16,
      batch_size=8,
      memory_limit_mb=round(limit),
    )
  elif kind == "file-gone":  # the second of 3 synthetic 1 MB models is corrupted (made once)
    path = models.sized_model_path(1, 1)
    with open(path, "r+b") as f:
      f.write(b"\0" * 512)
    run = KeyedRun(models=3, hint=1, elements=36, stream="cycle", model_mb=1, batch_size=4)
  else:
    raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
  try:
    run_keyed(run)
    return "finished"
  except KeyboardInterrupt:
    return "interrupted"
  except RunFailed as error:
    return type(error).__name__
  finally:
    if kind == "interrupted":
      timer.cancel()


def state() -> dict:
  """What this process holds now, and what is in the runs' temp dir."""
  me = psutil.Process()
  left = [n for n in os.listdir(RUNS_TEMP) if n != "cache"]
  return {
    "rss_mb": me.memory_info().rss / 2**20,
    "threads": threading.active_count(),
    "os_threads": me.num_threads(),
    "fds": me.num_fds(),
    "sockets": len(me.net_connections(kind="all")),
    "children": [p.pid for p in me.children(recursive=True)],
    "temp": sorted(left),
  }


def mixed_runs(runs: int, warmup: int = len(KINDS), kinds=KINDS, log=None) -> dict:
  """`runs` runs, kinds in turn, after `warmup` runs; the state before and after, and the ends."""
  for n in range(warmup):  # imports, caches, synthetic models, Beam's first-run set-up
    one_run(kinds[n % len(kinds)])
  before = state()
  ends: dict[str, dict[str, int]] = {}
  started = time.time()
  temp = set(before["temp"])
  for n in range(runs):
    kind = kinds[n % len(kinds)]
    end = one_run(kind)
    ends.setdefault(kind, {}).setdefault(end, 0)
    ends[kind][end] += 1
    if log:
      now = state()
      new, temp = sorted(set(now["temp"]) - temp), set(now["temp"])
      log(
        f"run {n + 1:3d} {kind}: {end}, rss {now['rss_mb']:.0f} MB, threads {now['threads']}"
        + (f", new in temp: {new}" if new else "")
      )
  return {"before": before, "after": state(), "ends": ends, "seconds": time.time() - started}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=100)
  parser.add_argument("--warmup", type=int, default=len(KINDS), help="runs before measuring")
  parser.add_argument("--quiet", action="store_true", help="no line per run")
  parser.add_argument("--json", action="store_true", help="the figures as one JSON object")
  args = parser.parse_args()
  import json
  import logging
  import shutil

  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  log = None if args.quiet or args.json else lambda line: print(line, flush=True)
  figures = mixed_runs(args.runs, args.warmup, log=log)
  shutil.rmtree(RUNS_TEMP, ignore_errors=True)
  if args.json:
    print(json.dumps(figures))
    return 0
  before, after = figures["before"], figures["after"]
  print(f"{args.runs} runs in {figures['seconds']:.0f} s; how each kind ended: {figures['ends']}")
  for name in ("rss_mb", "threads", "os_threads", "fds", "sockets"):
    print(
      f"{name}: {before[name]:.0f} before, {after[name]:.0f} after "
      f"({after[name] - before[name]:+.0f})"
    )
  print(f"child processes: {before['children']} before, {after['children']} after")
  print(f"in the runs' temp dir: {before['temp'] or 'nothing'} before the runs (warm-up),")
  print(f"{sorted(set(after['temp']) - set(before['temp'])) or 'nothing'} left by the runs")
  return 0


if __name__ == "__main__":
  sys.exit(main())
