"""What holds the memory above the start in the main job's timeline (results/timeline.png).

    python bench/timeline_memory.py [--repeats 3] [--cases demo,stop,mmap-threshold,both,hint8,mmap]

`make demo` draws the timeline of its hint-1 run (8 synthetic 16 MB models, 2000 zipf
elements, batches of 32, 430 swaps): memory above the start climbs to 150-250 MB while one
16 MB model is resident. Each case here is that run (`run_keyed`, in-process DirectRunner) in a
fresh process, with a probe inside it that reads, every 0.1 s, glibc's own accounting
(`mallinfo2`), the thread count and the resident memory (/proc/self/status), every 0.5 s
Python's object arenas (`sys._debugmallocstats`), and, at the pipeline's end, the resident pages
of every thread stack (/proc/self/smaps: an ~8 MB mapping behind a 4 kB guard). Figures are MB
above the run's start (the tracer's first sample), medians from 1 s after the first load to the
pipeline's end, then over `--repeats` fresh processes:

- `plateau`, `peak`: the memory above the start, as the timeline draws it (`before 1st`: as
  the first load starts);
- `malloc used`: what glibc has handed out and not had back (the resident models among it);
- `malloc free`: freed blocks glibc keeps for reuse (`fordblks`, the heaps' tops included);
- `py objects`: Python's own object arenas (pymalloc maps them itself, outside malloc);
- `stacks`: the thread stacks' resident pages (resident kB per thread at the end x the threads
  alive mid-run; `threads`: how many above the start);
- `file`: file-backed resident pages (libraries read for the first time, mapped weights);
- `unattrib.`: the resident memory above the start less all of the above;
- `end: freed`, `end: trim`, `end: left`: what `run_keyed` reports after the pipeline: freeing
  the models (and stopping their servers) gave back, `malloc_trim` gave back after that, and
  what the process still held above the start.

Then what the run held as its first load started, and what the two big imports a run triggers
cost, each in a fresh process (IPython: Beam's `is_in_ipython`; sympy: torch's `to_empty`).

Cases: `demo` (as `make demo`), `stop` (the kit stops evicted models' proxy servers:
`FixedBatchKeyedModelHandler(stop_evicted_servers=True)`), `mmap-threshold`
(`MALLOC_MMAP_THRESHOLD_=131072`: glibc maps every block over 128 kB on its own and unmaps it
when freed, instead of raising its threshold once a large block is freed and keeping later
blocks of that size in its heaps), `both`, `hint8` (8 loads, 8 models resident), `mmap`
(`--load mmap`: the weights are file-backed, nothing is copied). The probe's thread costs the
run a few percent of its time, not its memory. Measured (2026-12-03, 2 shared cores, 6 min; the
demo's plateau 180 MB: malloc used 52 with the 16 MB model, malloc free 70, py objects 39,
stacks 4.8, file 13, unattributed 1; the fixed threshold takes malloc free to 1 and the plateau
to 105): docs/measurements.md, "One run's memory".
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Optional

CASES = {
  "demo": {"hint": 1},
  "stop": {"hint": 1, "stop": True},
  "mmap-threshold": {"hint": 1, "env": {"MALLOC_MMAP_THRESHOLD_": "131072"}},
  "both": {"hint": 1, "stop": True, "env": {"MALLOC_MMAP_THRESHOLD_": "131072"}},
  "hint8": {"hint": 8},
  "mmap": {"hint": 1, "load": "mmap"},
}
MB = 2**20


class _Mallinfo2(ctypes.Structure):
  _fields_ = [
    (name, ctypes.c_size_t)
    for name in (
      "arena",
      "ordblks",
      "smblks",
      "hblks",
      "hblkhd",
      "usmblks",
      "fsmblks",
      "uordblks",
      "fordblks",
      "keepcost",
    )
  ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2


def probe() -> dict:
  """This process now: resident memory, anonymous part, threads, glibc's used and free bytes."""
  status = {}
  with open("/proc/self/status") as f:
    for line in f:
      name, _, rest = line.partition(":")
      if name in ("VmRSS", "RssAnon", "RssFile", "Threads"):
        status[name] = int(rest.split()[0])
  info = _libc.mallinfo2()
  return {
    "t": time.time(),
    "rss": status["VmRSS"] / 1024,
    "anon": status["RssAnon"] / 1024,
    "file": status["RssFile"] / 1024,
    "threads": status["Threads"],
    "malloc_used": (info.uordblks + info.hblkhd) / MB,
    "malloc_free": info.fordblks / MB,
  }


def python_arenas_mb() -> float:
  """MB of Python's own object arenas (pymalloc maps them itself, outside glibc's malloc)."""
  import tempfile

  with tempfile.TemporaryFile(mode="w+") as out:
    saved = os.dup(2)
    os.dup2(out.fileno(), 2)  # sys._debugmallocstats writes to the C stderr
    try:
      sys._debugmallocstats()
    finally:
      os.dup2(saved, 2)
      os.close(saved)
    out.seek(0)
    found = re.search(r"(\d+) arenas \* (\d+) bytes/arena", out.read())
  return int(found[1]) * int(found[2]) / MB if found else 0.0


def stack_mb() -> float:
  """Resident MB of the thread stacks: each an ~8 MB read-write mapping behind a 4 kB guard."""
  total, guard, current = 0, False, None
  with open("/proc/self/smaps") as f:
    for line in f:
      head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)\s+\S+\s+\S+\s+\S+\s*(\S*)", line)
      if head:
        size = (int(head[2], 16) - int(head[1], 16)) // 1024
        is_stack = guard and head[3].startswith("rw") and not head[4] and 7000 <= size <= 8200
        guard = head[3] == "---p" and size == 4 and not head[4]
        current = is_stack
      elif current and line.startswith("Rss:"):
        total += int(line.split()[1])
  return total / 1024


def run_one(case: dict) -> dict:
  """One run of the demo's hint-1 job (or `case`'s variant) in this process, probed."""
  import logging

  import mmkit.experiment as experiment
  from mmkit.core import cleanup, tracer
  from mmkit.settings import KeyedRun

  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  if case.get("stop"):
    keyed_handler = experiment.keyed_handler

    def stopping(*args, **kwargs):
      handler = keyed_handler(*args, **kwargs)
      handler.stop_evicted_servers = True
      return handler

    experiment.keyed_handler = stopping
  marks: dict = {}
  samples: list = []
  done = threading.Event()

  def sample():
    ticks = 0
    while not done.wait(0.1):
      ticks += 1
      samples.append({**probe(), **({"python": python_arenas_mb()} if ticks % 5 == 0 else {})})

  sampler_start = experiment.MemorySampler.start

  def start(self):  # the run's start: the tracer's first sample is taken here too
    marks["start"] = {**probe(), "stacks": stack_mb(), "python": python_arenas_mb()}
    threading.Thread(target=sample, daemon=True).start()
    return sampler_start(self)

  def clean_up(pipeline=None, rss=None):  # run_keyed's clean-up, its steps probed
    done.set()
    marks["end"] = {**probe(), "stacks": stack_mb()}
    cleanup.release_resident_models(trim=False)
    marks["freed"] = probe()
    cleanup.return_freed_memory()
    marks["trimmed"] = probe()
    return {
      "rss_after_free_mb": marks["freed"]["rss"],
      "rss_after_trim_mb": marks["trimmed"]["rss"],
    }

  load_model = tracer.TracedModelHandler.load_model

  def first_load(self):  # this process as its first model load starts
    marks.setdefault("first", {**probe(), "python": python_arenas_mb()})
    return load_model(self)

  experiment.MemorySampler.start = start
  experiment.clean_up = clean_up
  tracer.TracedModelHandler.load_model = first_load
  run = KeyedRun(
    models=8, hint=case["hint"], model_mb=16, elements=2000, load=case.get("load", "copy")
  )
  report = experiment.run_keyed(run)
  timeline = [(report.start + p["t"], p["rss_mb"]) for p in report.memory_timeline()]
  base = timeline[0][1]
  load = next(e for e in report.events if e["event"] == "load")
  first, end = load["t"] - load["seconds"], report.pipeline_end  # the first load's start
  zero = marks["start"]
  window = [s for s in samples if first + 1 < s["t"] < end]

  def above(name, points=window):
    values = [p[name] for p in points if name in p]
    return statistics.median(values) - zero[name] if values else float("nan")

  threads = above("threads")
  # The stacks' resident pages per thread, read at the end, times the threads alive mid-run.
  per_thread = (marks["end"]["stacks"] - zero["stacks"]) / max(
    marks["end"]["threads"] - zero["threads"], 1
  )
  parts = {
    "loads": report.loads,
    "plateau": statistics.median(mb - base for t, mb in timeline if first + 1 < t < end),
    "peak": max(mb for _, mb in timeline) - base,
    "before 1st load": [mb - base for t, mb in timeline if t <= first][-1],
    "malloc used": above("malloc_used"),
    "malloc free": above("malloc_free"),
    "python objects": above("python"),
    "stacks": per_thread * threads,
    "threads": threads,
    "file-backed": above("file"),
  }
  parts["unattributed"] = above("rss") - sum(
    parts[k] for k in ("malloc used", "malloc free", "python objects", "stacks", "file-backed")
  )
  parts.update(
    {
      "freeing returned": report.rss_at_end_mb - report.rss_after_free_mb,
      "trim returned": report.rss_after_free_mb - report.rss_after_trim_mb,
      "left after trim": report.rss_after_trim_mb - base,
      # As the first load starts: what Beam's start holds
      **{f"1st: {k}": marks["first"][k] - zero[k] for k in ("rss", "malloc_used", "malloc_free")},
      "1st: python objects": marks["first"]["python"] - zero["python"],
      "1st: file-backed": marks["first"]["file"] - zero["file"],
      "1st load s": load["seconds"],
    }
  )
  return parts


def import_costs() -> list[tuple[str, dict]]:
  """What the two big imports a run triggers cost this process (run_keyed's models made first)."""
  import importlib

  from mmkit.experiment import model_handlers

  model_handlers(8, 16)
  costs = []
  for module, why in (
    ("IPython", "IPython (Beam's is_in_ipython, as the pipeline is built)"),
    ("torch.fx.experimental.symbolic_shapes", "sympy (torch's to_empty, in the first load)"),
  ):
    before = {**probe(), "python": python_arenas_mb()}
    modules = len(sys.modules)
    importlib.import_module(module)
    after = {**probe(), "python": python_arenas_mb()}
    costs.append(
      (
        why,
        {
          "modules": len(sys.modules) - modules,
          **{k: after[k] - before[k] for k in ("rss", "malloc_used", "python", "file")},
        },
      )
    )
  return costs


COLUMNS = (
  ("loads", "loads", "{:.0f}"),
  ("plateau", "plateau", "{:.0f}"),
  ("peak", "peak", "{:.0f}"),
  ("before 1st load", "before 1st", "{:.0f}"),
  ("malloc used", "malloc used", "{:.0f}"),
  ("malloc free", "malloc free", "{:.0f}"),
  ("python objects", "py objects", "{:.0f}"),
  ("stacks", "stacks", "{:.1f}"),
  ("threads", "threads", "{:.0f}"),
  ("file-backed", "file", "{:.0f}"),
  ("unattributed", "unattrib.", "{:.0f}"),
  ("freeing returned", "end: freed", "{:.0f}"),
  ("trim returned", "end: trim", "{:.0f}"),
  ("left after trim", "end: left", "{:.0f}"),
)


def _fresh(*args: str, env: Optional[dict] = None):
  """This script run again in a fresh process with `args`; its last line of output, parsed."""
  done = subprocess.run(
    [sys.executable, __file__, *args],
    env={**os.environ, **(env or {})},
    capture_output=True,
    text=True,
    check=True,
  )
  return json.loads(done.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--cases", default=",".join(CASES))
  parser.add_argument("--one", help=argparse.SUPPRESS)  # a case's JSON, run in this process
  parser.add_argument("--imports", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one or args.imports:
    print(json.dumps(run_one(json.loads(args.one)) if args.one else import_costs()), flush=True)
    return
  print(
    f"MB above the run's start; medians of {args.repeats} fresh processes. The swapping plateau "
    "= malloc used + malloc free + py objects + stacks + file + unattributed",
    flush=True,
  )
  print(f"{'case':15}" + "".join(f"{title:>12}" for _, title, _ in COLUMNS), flush=True)
  medians = {}
  for name in args.cases.split(","):
    case = CASES[name]
    runs = [_fresh("--one", json.dumps(case), env=case.get("env")) for _ in range(args.repeats)]
    row = medians[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    plateaus = ", ".join(f"{r['plateau']:.0f}" for r in runs)
    cells = "".join(f"{fmt.format(row[key]):>12}" for key, _, fmt in COLUMNS)
    print(f"{name:15}{cells}   (plateau per run: {plateaus})", flush=True)
  if "demo" in medians:
    row = medians["demo"]
    print(
      f"\ndemo, as its first load starts ({row['before 1st load']:.0f} MB on the timeline; "
      f"this process {row['1st: rss']:.0f}): malloc used {row['1st: malloc_used']:.0f}, "
      f"malloc free {row['1st: malloc_free']:.0f}, py objects {row['1st: python objects']:.0f}, "
      f"file {row['1st: file-backed']:.0f}; the first load took {row['1st load s']:.2f} s"
    )
  print("\nimports a run triggers, each in a fresh process (MB):")
  for why, cost in _fresh("--imports"):
    print(
      f"  {why}: {cost['modules']} modules, {cost['rss']:.0f} MB resident "
      f"(py objects {cost['python']:.0f}, malloc used {cost['malloc_used']:.0f}, "
      f"file {cost['file']:.0f})"
    )


if __name__ == "__main__":
  main()
