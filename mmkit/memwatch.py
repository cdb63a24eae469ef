"""Memory of a process tree, sampled from a process of its own (taught in 04_memory).

    python -m mmkit.memwatch ROOT_PID [--interval 0.05] [--refresh-every 10] [--limit-mb M]

prints one JSON line per process per sample (`t`, `pid`, `rss_mb`, `file_mb`, `role`, `ppid`)
until its standard input closes or the root process ends. With `--limit-mb` it is also the
run's memory watchdog: the first sample whose total passes M MB prints a
`{"event": "memory_limit", ...}` line and sends SIGINT to the root, which ends the run
(`mmkit.faults` says why no kernel limit fits).
`MemorySampler` below runs it beside a pipeline: a sampling *thread* inside the
pipeline's process competes for the GIL with Beam's threads (a thrashing run keeps two per
model load), and measured that way it cost a swapping run 5-8% of its time
(`python bench/tracing_overhead.py`); from its own process it costs the run nothing.
Needs only psutil: the module can be copied alone.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

import psutil

MB = 2**20

__all__ = ["MB", "TreeSampler", "MemorySampler", "process_role", "main"]


def process_role(proc: psutil.Process, root_pid: int) -> str:
  """main (the root), worker (a Beam SDK worker process), or child (anything else)."""
  if proc.pid == root_pid:
    return "main"
  try:
    cmd = proc.cmdline()
  except psutil.Error:
    cmd = []
  # A worker is the python process running Beam's SDK harness (not the shell that starts it).
  is_worker = bool(cmd) and "python" in cmd[0] and any("sdk_worker" in part for part in cmd)
  return "worker" if is_worker else "child"


class TreeSampler:
  """Reads the resident memory of a process and its descendants.

  Finding the descendants means reading every process of the machine (0.7-2.5 ms here), so
  `sample(refresh=False)` reads only the processes found last time (about 12 us each).
  """

  def __init__(self, root_pid: Optional[int] = None, skip: frozenset = frozenset()):
    self.root = psutil.Process(root_pid)
    self.skip = set(skip)
    self.procs: list[psutil.Process] = [self.root]
    self.roles: dict[int, str] = {}
    self.parents: dict[int, int] = {}  # pid -> parent pid: ties a worker to Beam's shell

  def sample(self, refresh: bool = True) -> list[dict]:
    if refresh:
      try:
        self.procs = [
          self.root,
          *(p for p in self.root.children(recursive=True) if p.pid not in self.skip),
        ]
      except psutil.Error:
        pass
    now, samples = time.time(), []
    for proc in self.procs:
      try:
        info = proc.memory_info()
      except psutil.Error:
        continue
      if proc.pid not in self.roles:
        self.roles[proc.pid] = process_role(proc, self.root.pid)
        try:
          self.parents[proc.pid] = proc.ppid()
        except psutil.Error:
          self.parents[proc.pid] = 0
      samples.append(
        {
          "t": now,
          "pid": proc.pid,
          "rss_mb": info.rss / MB,
          # Resident pages backed by a file (mapped model weights, shared libraries): the
          # kernel can drop them and read them again; `shared` on Linux, 0 where psutil lacks it.
          "file_mb": getattr(info, "shared", 0) / MB,
          "role": self.roles[proc.pid],
          "ppid": self.parents[proc.pid],
        }
      )
    return samples


class MemorySampler:
  """Samples the resident memory of this process and all its descendants while a run goes.

  Descendants matter: the multi-processing DirectRunner runs workers as child processes,
  and Beam can serve shared models from a spawned server process. The sampling runs in a
  process of its own (`python -m mmkit.memwatch`): as a thread here it competed for the GIL
  with Beam's threads and cost a swapping run 5-8% (`bench/tracing_overhead.py`). Samples
  are read when the sampler stops, plus one taken here at start and one at stop. `samples`
  also holds, while the run goes, the start sample only; `in_process=True` samples from a
  thread instead, so `samples` grows live (the explorer's progress uses that).
  """

  def __init__(
    self,
    interval: float = 0.05,
    refresh_every: int = 10,
    in_process: bool = False,
    limit_mb: Optional[float] = None,
  ):
    if limit_mb is not None and in_process:
      raise ValueError("a memory limit needs the sampler's own process: in_process=False.")
    self.interval = interval
    self.refresh_every = refresh_every
    self.in_process = in_process
    self.limit_mb = limit_mb  # the watchdog: SIGINT to this process once the tree passes it
    self.limit_reached: Optional[dict] = None  # {"t", "rss_mb", "limit_mb", "processes"}
    self.samples: list[dict] = []  # {"t", "pid", "rss_mb", "file_mb", "role", "ppid"}
    self._tree = TreeSampler()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._child: Optional[subprocess.Popen] = None
    self._out = None

  def sample_once(self, refresh: bool = True) -> None:
    self.samples.extend(self._tree.sample(refresh))

  def _loop(self) -> None:
    ticks = 0
    while not self._stop.wait(self.interval):
      ticks += 1
      self.sample_once(refresh=ticks % self.refresh_every == 0)

  def start(self) -> "MemorySampler":
    if self.in_process:
      self._thread = threading.Thread(target=self._loop, name="mmkit-memory", daemon=True)
      self._thread.start()
    else:
      self._out = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
      self._child = subprocess.Popen(
        [
          sys.executable,
          "-m",
          "mmkit.memwatch",
          str(os.getpid()),
          "--interval",
          str(self.interval),
          "--refresh-every",
          str(self.refresh_every),
          *(["--limit-mb", str(self.limit_mb)] if self.limit_mb is not None else []),
        ],
        stdin=subprocess.PIPE,
        stdout=self._out,
        stderr=subprocess.DEVNULL,
      )
      self._tree.skip.add(self._child.pid)  # its own few MB are not the run's
    self.sample_once()
    return self

  def stop(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._child is not None:
      try:
        self._child.stdin.close()  # asks it to stop
        self._child.wait(timeout=10)
      except (OSError, subprocess.TimeoutExpired):
        self._child.kill()
        self._child.wait()
      self._out.seek(0)
      for line in self._out:
        if line.strip():
          record = json.loads(line)
          if record.get("event") == "memory_limit":
            self.limit_reached = record
          else:
            self.samples.append(record)
      self._out.close()
      self._child = None
    self.sample_once()
    self.samples.sort(key=lambda sample: sample["t"])


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("root_pid", type=int)
  parser.add_argument("--interval", type=float, default=0.05)
  parser.add_argument("--refresh-every", type=int, default=10)
  parser.add_argument("--limit-mb", type=float, default=None)
  args = parser.parse_args(argv)
  try:
    sampler = TreeSampler(args.root_pid, skip=frozenset({os.getpid()}))
  except psutil.Error:
    return 0  # the root is gone already
  tick, limit = 0, args.limit_mb
  while sampler.root.is_running():
    samples = sampler.sample(refresh=tick % args.refresh_every == 0)
    for sample in samples:
      sys.stdout.write(json.dumps(sample) + "\n")
    total = sum(sample["rss_mb"] for sample in samples)
    if limit is not None and total > limit:
      # Written before the signal: the root reads it once the run has unwound.
      event = {"event": "memory_limit", "t": samples[0]["t"], "rss_mb": total, "limit_mb": limit}
      sys.stdout.write(json.dumps({**event, "processes": len(samples)}) + "\n")
      sys.stdout.flush()
      os.kill(sampler.root.pid, signal.SIGINT)
      limit = None  # once: the root's handler ends the run
    sys.stdout.flush()
    tick += 1
    ready, _, _ = select.select([sys.stdin], [], [], args.interval)
    if ready and not sys.stdin.read(1):  # the parent closed our input: stop
      break
  return 0


if __name__ == "__main__":
  sys.exit(main())
