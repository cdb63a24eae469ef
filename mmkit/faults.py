"""Runs that fail part-way: one line says why, the partial trace is kept (taught in 04_memory).

A sweep is only as useful as its worst run. A run that passes its memory limit, loses a worker
process or finds a model file gone ends cleanly and raises `RunFailed` (a RuntimeError): its
message names the cause in one line, and `error.report` is the `RunReport` traced until then,
so the loads, the memory and the models resident are not lost with the run.

Why `--memory-limit-mb` is a watchdog and no kernel limit: Linux ignores RLIMIT_RSS, and
cgroups are not ours to change. RLIMIT_AS and RLIMIT_DATA count address space, not resident
memory, and per process, not per process tree. Measured on a run of 8 synthetic 64 MB models
(64 elements, batches of 8): hint 8 peaked at 1,033 MB resident and 1,283 MB of data segment,
while hint 2 on a cycling stream peaked at 654 MB resident but 1,900 MB of data segment (each
evicted model's proxy server keeps two threads, each with a stack), and VmSize was 2.4-3.4 GB
for both. Any RLIMIT_DATA that stops hint 8 stops the hint-2 run, which fits, first. So the
memory sampler's own process (`mmkit.memwatch`) is the watchdog: it sums the tree's resident
memory as `peak_rss_mb` does, every 50 ms, and sends SIGINT to the run's process the moment
the sum passes the limit; the kit's interrupt handling ends the run (`mmkit.workers`).
"""

from __future__ import annotations

import signal
from typing import Any, Optional

__all__ = [
  "RunFailed",
  "MemoryLimitExceeded",
  "WorkerDied",
  "ModelFileFailed",
  "MEMORY_LIMIT_MECHANISM",
  "memory_limit_error",
  "resident_models_text",
  "exit_cause",
  "worker_died_error",
  "model_file_error",
]

MEMORY_LIMIT_MECHANISM = "watchdog"  # see the module docstring: no kernel limit fits


class RunFailed(RuntimeError):
  """A run that ended early: the message says why; `report` is what was traced until then."""

  def __init__(self, message: str, report: Any = None):
    super().__init__(message)
    self.report = report  # a RunReport, or None where nothing could be read


class MemoryLimitExceeded(RunFailed):
  """The run's process tree passed its memory limit (`--memory-limit-mb`)."""


class WorkerDied(RunFailed):
  """A worker process of the run died under it (killed, as by the kernel's OOM killer)."""


class ModelFileFailed(RunFailed):
  """A model file failed to load during the run (deleted or changed after it was validated)."""


def model_file_error(report: Any) -> ModelFileFailed:
  """The one-line error of a run whose model files failed to load; counts what was not served."""
  failures = report.load_failures()
  first = failures[0]
  more = f" (and {len(failures) - 1} more keys)" if len(failures) > 1 else ""
  message = (
    f"model file {first['path']} for key {first['key']!r} could not be loaded during the run "
    f"({first['error'].split(':')[0]}: deleted or changed after it was validated?){more}: "
    f"{report.dead_letters} elements not served (dead letters), "
    f"{report.elements_out} served"
  )
  report.error = message
  return ModelFileFailed(message, report)


def resident_models_text(report: Any, t: float) -> str:
  """'3 models resident: a, b, c' at time `t`, per process where several held models."""
  held = report.resident_at(t)
  n = sum(len(keys) for keys in held.values())
  if not held:
    return "no model resident"
  if len(held) == 1:
    (keys,) = held.values()
    return f"{n} models resident: {', '.join(keys)}"
  per_process = "; ".join(f"pid {pid}: {', '.join(keys)}" for pid, keys in sorted(held.items()))
  return f"{n} models resident ({per_process})"


def memory_limit_error(report: Any, reached: dict) -> MemoryLimitExceeded:
  """The one-line error of a run the watchdog ended, the partial report attached."""
  message = (
    f"memory limit reached: the run's processes held {reached['rss_mb']:.0f} MB, above the "
    f"limit of {reached['limit_mb']:g} MB ({MEMORY_LIMIT_MECHANISM}), with "
    f"{resident_models_text(report, reached['t'])}; run ended after {report.loads} loads"
  )
  report.error = message
  report.memory_limit_reached_s = round(reached["t"] - report.start, 3)
  return MemoryLimitExceeded(message, report)


def exit_cause(code: Optional[int], via_shell: bool = False) -> str:
  """How a process ended, from its exit code (negative: the signal), with the likely cause.

  `via_shell`: the code is that of a shell that ran it, which exits 128 + N when the process
  was killed by signal N (Beam starts its workers so).
  """
  if code is None:
    return "ended abruptly (killed? the kernel's OOM killer sends SIGKILL: out of memory?)"
  number = -code if code < 0 else code - 128 if via_shell and 128 < code < 128 + 65 else None
  if number is None:
    return f"exited with status {code}"
  try:
    name = signal.Signals(number).name
  except ValueError:
    name = "unknown signal"
  likely = ": out of memory? (the kernel's OOM killer sends it)" if number == signal.SIGKILL else ""
  return f"was killed by signal {number} ({name}){likely}"


def worker_died_error(report: Any, death: dict) -> WorkerDied:
  """The one-line error of a run whose worker process died under it, the partial report attached.

  `death` is `mmkit.workers.RunStop.deaths[0]`; the worker's own pid is the sampled worker
  process whose parent was the shell Beam started it with. Workers are numbered as
  `mmkit.plots.worker_names` does: by process id.
  """
  workers = sorted({s["pid"] for s in report.samples if s.get("role") == "worker"})
  dead = [
    s["pid"]
    for s in report.samples
    if s.get("role") == "worker" and s.get("ppid") == death.get("shell_pid")
  ]
  if dead:
    who = f"worker process {dead[0]} (worker {workers.index(dead[0]) + 1} of {len(workers)})"
  else:  # it died before the sampler saw it
    who = f"a worker process (Beam's {death.get('worker_id')}, shell pid {death.get('shell_pid')})"
  message = (
    f"{who} {exit_cause(death['returncode'], via_shell=True)}; the run was ended after "
    f"{report.loads} loads, {report.elements_out} elements served"
  )
  report.error = message
  return WorkerDied(message, report)
