"""How many connections Beam's shared objects open in a keyed run, and what Nagle's waits cost.

    python bench/nagle.py [--runs 5] [--parts runs,calls,proxied]

Beam's `MultiProcessShared` objects answer through `multiprocessing` managers over localhost
TCP, without `TCP_NODELAY`: a new connection's first request waits for the server's delayed
ACK, 40 ms on Linux (docs/beam_findings.md, finding 13). Every TCP connection a process opens
through `multiprocessing.connection.SocketClient` is counted here, by the function that opened
it (`connect`, `_create`, `_incref`, `_decref`: BaseManager; `_connect`: a proxy's first call in
a thread); worker processes count theirs through a `sitecustomize` this script puts on their
PYTHONPATH. Configurations run in turn, so each sees the same background load:

- `runs`: the keyed run of the explorer's lead measurement (2 models, 8 elements, 4 MB models,
  one batch of 8) on each runner: Nagle on everywhere; the kit as shipped (`run_keyed` sets
  TCP_NODELAY on this process's connections: `mmkit.core.beam_private.tcp_nodelay`); and on
  `multiprocess` also the worker processes' connections (not something the kit does).
- `calls`: one shared object in this process, a new proxy per call (the previous one
  dropped), as Beam's keyed handler makes per batch: `acquire()`, the proxy's first call (a new
  connection) and its second, with and without TCP_NODELAY.
- `proxied`: bench/proxied_batches.py's question, smaller (4 models, hint 4, 160 elements
  spread over 2 worker processes, batches of 8): the median time of a batch sent to a model
  another worker holds, with and without TCP_NODELAY in the worker processes.
"""

import argparse
import collections
import contextlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing import connection

from mmkit import experiment
from mmkit.experiment import run_keyed
from mmkit.settings import KeyedRun

# Written to a temp dir on the workers' PYTHONPATH: Python imports it at every start.
SITECUSTOMIZE = """
import os
import sys

if os.environ.get("NAGLE_BENCH_LOG"):
  from multiprocessing import connection

  _plain = connection.SocketClient

  def _counting(address):
    if connection.address_type(address) == "AF_INET":
      frame = sys._getframe(1)
      while frame.f_back is not None and frame.f_code.co_name != "Client":
        frame = frame.f_back
      with open(os.environ["NAGLE_BENCH_LOG"], "a") as log:
        log.write(f"{os.getpid()} {frame.f_back.f_code.co_name}\\n")
    return _plain(address)

  connection.SocketClient = _counting
  if os.environ.get("NAGLE_BENCH_NODELAY") == "1":
    from mmkit.core.beam_private import tcp_nodelay

    _NODELAY = tcp_nodelay()  # kept: a collected generator would undo the patch
    _NODELAY.__enter__()  # for the worker's whole life
"""


class Counter:
  """Counts the TCP connections this process opens, by the function that opened them."""

  def __init__(self):
    self.opened = collections.Counter()
    self._plain = connection.SocketClient
    connection.SocketClient = self._counting

  def _counting(self, address):
    if connection.address_type(address) == "AF_INET":
      frame = sys._getframe(1)
      while frame.f_back is not None and frame.f_code.co_name != "Client":
        frame = frame.f_back
      self.opened[frame.f_back.f_code.co_name] += 1
    return self._plain(address)

  def take(self) -> collections.Counter:
    opened, self.opened = self.opened, collections.Counter()
    return opened


def _workers_opened(log: str) -> collections.Counter:
  """What worker processes logged since the last call (and empties the log)."""
  with open(log) as f:
    lines = f.read().split()
  open(log, "w").close()
  return collections.Counter(lines[1::2])


def _one_run(run: KeyedRun, kit: bool, workers: bool, counter: Counter, log: str) -> dict:
  os.environ["NAGLE_BENCH_NODELAY"] = "1" if workers else "0"
  shipped = experiment.tcp_nodelay
  if not kit:
    experiment.tcp_nodelay = contextlib.nullcontext
  try:
    start = time.perf_counter()
    report = run_keyed(run)
    wall = time.perf_counter() - start
  finally:
    experiment.tcp_nodelay = shipped
  assert report.elements_out == run.elements, report.summary()
  return {
    "wall": wall,
    "here": counter.take(),
    "workers": _workers_opened(log),
    "proxied_ms": report.proxied_batch_ms(),
  }


def _in_turn(runs: int, configs: dict, run: KeyedRun, counter: Counter, log: str) -> dict:
  """Each configuration `runs` times, in turn; a first, untimed run warms imports and models."""
  _one_run(run, True, False, counter, log)
  results = {name: [] for name in configs}
  for _ in range(runs):
    for name, (kit, workers) in configs.items():
      results[name].append(_one_run(run, kit, workers, counter, log))
  return results


def _opened(rows: list, where: str) -> str:
  """Connections per run (median), and by opener in the median run."""
  totals = [sum(r[where].values()) for r in rows]
  middle = sorted(rows, key=lambda r: sum(r[where].values()))[len(rows) // 2][where]
  openers = ", ".join(f"{name} {n}" for name, n in middle.most_common())
  return f"{statistics.median(totals):.0f}" + (f" ({openers})" if openers else "")


def runs_part(runs: int, counter: Counter, log: str) -> None:
  print("keyed runs: 2 models, 8 elements, 4 MB models, one batch of 8; wall s (median)")
  for runner in ("direct", "interactive", "multiprocess"):
    run = KeyedRun(models=2, elements=8, model_mb=4, batch_size=8, runner=runner)
    configs = {"Nagle on": (False, False), "kit (this process)": (True, False)}
    if runner == "multiprocess":
      configs["kit + workers"] = (True, True)
    results = _in_turn(runs, configs, run, counter, log)
    for name, rows in results.items():
      walls = [r["wall"] for r in rows]
      print(
        f"  {runner:12} {name:18} {statistics.median(walls):5.2f} s "
        f"(min {min(walls):.2f}, max {max(walls):.2f}); connections here "
        f"{_opened(rows, 'here')}, in workers {_opened(rows, 'workers')}"
      )


def calls_part(runs: int) -> None:
  from apache_beam.utils.multi_process_shared import MultiProcessShared

  from mmkit.core.beam_private import tcp_nodelay
  from mmkit.core.cleanup import release_resident_models

  # Beam's keyed handler acquires a model's proxy per batch and drops it after: the last proxy
  # of a server gone, this thread's connection to it closes, and the next call opens another.
  print("a new proxy per call, the last one dropped (as Beam's keyed handler per batch); ms")
  tag = uuid.uuid4().hex + "_nagle_bench"  # uuid-named: release_resident_models stops its server
  for name, patch in (("Nagle on", contextlib.nullcontext), ("TCP_NODELAY", tcp_nodelay)):
    acquire, first, second = [], [], []
    with patch():
      for _ in range(4 * runs):
        start = time.perf_counter()
        proxy = MultiProcessShared(list, tag=tag, always_proxy=True).acquire()
        acquire.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        proxy.count(0)  # the proxy's first call in this thread: a connection of its own
        first.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        proxy.count(0)
        second.append(1000 * (time.perf_counter() - start))
        del proxy  # its decref opens one more connection
    print(
      f"  {name:12} acquire() {statistics.median(acquire):6.2f}, first call "
      f"{statistics.median(first):6.2f}, second call {statistics.median(second):5.2f} "
      f"(medians of {4 * runs})"
    )
  release_resident_models()


def proxied_part(runs: int, counter: Counter, log: str) -> None:
  run = KeyedRun(models=4, hint=4, elements=160, batch_size=8, runner="multiprocess", spread=True)
  configs = {"workers Nagle on": (True, False), "workers TCP_NODELAY": (True, True)}
  results = _in_turn(runs, configs, run, counter, log)
  print(
    f"proxied batches: {run.models} models, hint {run.hint}, {run.elements} elements over 2 "
    f"worker processes, batches of {run.batch_size}"
  )
  for name, rows in results.items():
    proxied = [r["proxied_ms"] for r in rows if r["proxied_ms"] is not None]
    walls = [r["wall"] for r in rows]
    print(
      f"  {name:20} proxied batch {statistics.median(proxied):6.2f} ms (median of the runs' "
      f"medians, {min(proxied):.2f}-{max(proxied):.2f}); run {statistics.median(walls):5.1f} s; "
      f"connections in workers {_opened(rows, 'workers')}"
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--parts", default="runs,calls,proxied")
  args = parser.parse_args()
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  parts = args.parts.split(",")
  site = tempfile.mkdtemp(prefix="nagle_bench_")
  with open(os.path.join(site, "sitecustomize.py"), "w") as f:
    f.write(SITECUSTOMIZE)
  log = os.path.join(site, "opened.log")
  open(log, "w").close()
  # Worker processes inherit the environment: they import the sitecustomize above.
  os.environ["PYTHONPATH"] = os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])
  os.environ["NAGLE_BENCH_LOG"] = log
  counter = Counter()
  print(f"load average {os.getloadavg()[0]:.1f}, {args.runs} runs of each")
  try:
    if "runs" in parts:
      runs_part(args.runs, counter, log)
    if "calls" in parts:
      calls_part(args.runs)
    if "proxied" in parts:
      proxied_part(args.runs, counter, log)
  finally:
    shutil.rmtree(site, ignore_errors=True)


if __name__ == "__main__":
  main()
