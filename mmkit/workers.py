"""Ending the worker processes a run started, also when the reader presses stop (04_memory).

Beam's multi-processing DirectRunner runs each SDK worker in a subprocess and, on the way out
of a run, waits for every worker to exit. A run interrupted while its workers start up never
sees them exit: the kernel hangs on "stop" (measured: still waiting after 10 minutes). So on
an interrupt the workers are ended first, and only then does the KeyboardInterrupt unwind.

A second trap: Python runs signal handlers in the main thread only, and a main thread blocked
on a lock (Beam waiting for a bundle) is not woken when another of Beam's threads takes the
signal. The stop is then noticed only when the bundle ends (measured: 2 runs in 10 hung until
killed). `signal.set_wakeup_fd` tells a small watcher thread of every SIGINT, whichever thread
took it; the watcher re-sends it to the main thread until the main thread has acted on it.
And a third: Beam may start a worker just after the handler ended the others, and then
waits on it forever while it unwinds (measured: 1 stop in 8 in a real kernel on a busy
machine). So until the run has unwound, the watcher ends any worker that appears.

A worker killed mid-run (the kernel's OOM killer sends SIGKILL) hangs the run too: Beam's thread
that started it raises "Worker subprocess exited with return code 137" and dies, while the main
thread waits forever for the dead worker's bundle (measured: still waiting after 5 minutes). The
kit takes that thread's error as a stop: the other workers are ended and the run unwinds, the
death recorded in `RunStop.deaths` for the run to name (`mmkit.faults.worker_died_error`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

import psutil

__all__ = ["child_pids", "stop_worker_processes", "stop_workers_on_interrupt", "RunStop"]


def child_pids() -> set[int]:
  """The ids of this process's children, grandchildren included."""
  return {p.pid for p in psutil.Process().children(recursive=True)}


def stop_worker_processes(
  exclude: set[int] = frozenset(), timeout: float = 5.0, kill: bool = False
) -> int:
  """Ends the child processes not in `exclude` (SDK workers, model servers); returns how many.

  `kill` skips SIGTERM: an interrupted run needs its workers gone before Beam waits on them.
  """
  children = [p for p in psutil.Process().children(recursive=True) if p.pid not in exclude]
  # To kill, stop them all first: none is left running to print about the others' deaths
  # (Beam starts each worker through `sh -c`, and a worker logs when its log server goes).
  for action in ("suspend", "kill") if kill else ("terminate",):
    for child in children:
      try:
        getattr(child, action)()
      except psutil.Error:
        pass
  _, alive = psutil.wait_procs(children, timeout=timeout)
  for child in alive:
    child.kill()
  return len(children)


@dataclass
class RunStop:
  """What stopped a run early besides a SIGINT: worker processes that died under it."""

  # {"returncode" (of Beam's shell), "signal" (or None), "shell_pid", "worker_id"}
  deaths: list[dict] = field(default_factory=list)


@contextmanager
def stop_workers_on_interrupt() -> Iterator[RunStop]:
  """Within it, SIGINT (stop button, Ctrl-C) ends the workers started inside it, then raises.

  A worker that dies under the run (killed, crashed) stops it the same way, and is recorded in
  the `RunStop` it yields. Only the main thread can take signals; elsewhere this does nothing.
  Beam's threads and loggers in this process report the deaths as errors; those reports are
  dropped, since they are expected.
  """
  stop = RunStop()
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return
  before = child_pids()
  previous_handler = signal.getsignal(signal.SIGINT)
  previous_hook = threading.excepthook
  interrupted = threading.Event()

  stopping = threading.Event()  # a stop handled or a death recorded: Beam's errors now are echoes

  beam_logger = logging.getLogger("apache_beam")
  beam_level = beam_logger.level

  def is_echo() -> bool:
    # Beam's threads that served the workers fail as their workers go: expected, not news.
    # A worker's death reaches Beam's data plane a moment before its shell's exit reaches
    # us, so an error comes first: it waits a little for the death that explains it.
    return stopping.wait(_ECHO_WAIT_SECONDS)

  unwinding = threading.Event()  # the run raised already: a death is only recorded

  def quiet_worker_deaths(args):
    death = _worker_death(args)
    # Jupyter's stop button sends SIGINT to the kernel's whole process group, the workers
    # included: the run's own stop follows at once. Only a worker that died alone is a death.
    if death is not None and death["signal"] == signal.SIGINT:
      stopping.wait(_ECHO_WAIT_SECONDS)
    if death is not None and not stopping.is_set():
      # A worker died under the run: Beam would wait for it forever. Stop the run as the
      # stop button does (the watcher re-sends the signal until the main thread acts).
      stop.deaths.append(death)
      stopping.set()
      if not unwinding.is_set():
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
      return
    if not (_raised_in_beam(args.exc_traceback) and is_echo()):
      previous_hook(args)

  echoes = _DropEchoes(is_echo)

  def end_workers():
    stop_worker_processes(exclude=before, timeout=2.0, kill=True)

  def on_interrupt(signum, frame):
    interrupted.set()
    stopping.set()
    beam_logger.setLevel(logging.CRITICAL)
    end_workers()
    if callable(previous_handler):
      previous_handler(signum, frame)  # the kernel's own handler raises KeyboardInterrupt
    raise KeyboardInterrupt

  signal.signal(signal.SIGINT, on_interrupt)
  threading.excepthook = quiet_worker_deaths
  for name in _ECHOING_LOGGERS:
    logging.getLogger(name).addFilter(echoes)
  was_reaper = _adopt_orphans(True)
  watcher = _InterruptWatcher(interrupted, end_workers)
  try:
    yield stop
  except Exception:
    # Beam's own error may be the echo of a worker's death (another worker's bundle failing
    # on its broken connection): give the death a moment to be recorded, so the run names it.
    unwinding.set()
    stopping.wait(_ECHO_WAIT_SECONDS)
    raise
  finally:
    watcher.close()
    if interrupted.is_set():
      end_workers()  # a worker orphaned as its shell was ended is ours now (see _adopt_orphans)
    _adopt_orphans(was_reaper)
    signal.signal(signal.SIGINT, previous_handler)
    threading.excepthook = previous_hook
    for name in _ECHOING_LOGGERS:
      logging.getLogger(name).removeFilter(echoes)
    beam_logger.setLevel(beam_level)


_ECHO_WAIT_SECONDS = 2.0  # how long an error of Beam's waits for a worker death to explain it
# Beam's loggers that log a dying worker's broken stream as an error (a logger's filter sees
# only the records of that logger, not of its children).
_ECHOING_LOGGERS = ("apache_beam.runners.worker.data_plane",)


class _DropEchoes(logging.Filter):
  """Drops the errors Beam logs as a run is stopped or a worker dies (`is_echo` decides)."""

  def __init__(self, is_echo):
    super().__init__()
    self._is_echo = is_echo

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR or not self._is_echo()


class _InterruptWatcher:
  """After a SIGINT, whichever thread took it: re-sends it to the main thread until `handled`
  is set, then ends any worker process that still appears, until `close()` (the run unwound).

  Installed with `signal.set_wakeup_fd` (main thread only); signals meant for a wake-up fd
  that was already set (asyncio's, say) are passed on to it.
  """

  def __init__(
    self, handled: threading.Event, end_workers, every_seconds: float = 0.2, tries: int = 300
  ):
    self._handled, self._end_workers, self._every, self._tries = (
      handled,
      end_workers,
      every_seconds,
      tries,
    )
    self._closed = threading.Event()
    self._read, self._write = socket.socketpair()
    self._write.setblocking(False)
    self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
    self._main = threading.main_thread().ident
    self._thread = threading.Thread(target=self._watch, name="mmkit-interrupt-watcher", daemon=True)
    self._thread.start()

  def _watch(self) -> None:
    while True:
      try:
        received = self._read.recv(64)
      except OSError:
        return
      if not received:
        return  # closed
      if self._previous_fd != -1:
        try:
          os.write(self._previous_fd, received)
        except OSError:
          pass
      if signal.SIGINT in received:
        self._follow_through()

  def _follow_through(self) -> None:
    for _ in range(self._tries):  # a minute at most
      if self._closed.wait(self._every):
        return
      if self._handled.is_set():
        self._end_workers()  # workers Beam started after the handler ran
      else:
        signal.pthread_kill(self._main, signal.SIGINT)

  def close(self) -> None:
    signal.set_wakeup_fd(self._previous_fd)
    self._closed.set()  # ends a follow-through under way
    self._write.close()
    self._read.shutdown(socket.SHUT_RDWR)
    self._thread.join(timeout=2)
    self._read.close()


def _adopt_orphans(on: bool) -> bool:
  """Makes this process the child subreaper (Linux): orphaned descendants become its children.

  Beam starts each worker through `sh -c`. Ending the shell just as it starts the worker
  orphans the worker, which then leaves the process tree, escapes the cleanup and waits 60 s
  for a logging channel that is gone (seen once in a fresh clone's test run). As subreaper,
  the orphan stays a child here and is ended with the others. Returns the previous setting;
  does nothing (False) where prctl is not available.
  """
  import ctypes

  try:
    libc = ctypes.CDLL(None, use_errno=True)
    previous = ctypes.c_int(0)
    libc.prctl(37, ctypes.byref(previous), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    libc.prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    return bool(previous.value)
  except (OSError, AttributeError):
    return False


def _worker_death(args) -> Optional[dict]:
  """A worker's death, from the error Beam's thread raised as the worker's shell ended; else None.

  Beam 2.77 starts each SDK worker through `sh -c` in `SubprocessSdkWorker.run`, and raises
  "Worker subprocess exited with return code N" when the shell exits with N != 0 (128 + the
  signal when the worker was killed). The shell and Beam's worker id come from that frame.
  """
  error = args.exc_value
  match = re.fullmatch(r"Worker subprocess exited with return code (-?\d+)", str(error))
  if not (isinstance(error, RuntimeError) and match):
    return None
  code = int(match.group(1))
  # The shell exits 128 + N when the worker is killed by signal N; killed itself, -N.
  number = -code if code < 0 else code - 128 if 128 < code <= 128 + 64 else None
  death = {"returncode": code, "signal": number, "shell_pid": None, "worker_id": None}
  tb = args.exc_traceback
  while tb is not None:
    frame_locals = tb.tb_frame.f_locals
    shell, worker = frame_locals.get("p"), frame_locals.get("self")
    if getattr(shell, "pid", None) is not None:
      death["shell_pid"] = shell.pid
    if getattr(worker, "_worker_id", None) is not None:
      death["worker_id"] = worker._worker_id
    tb = tb.tb_next
  return death


def _raised_in_beam(tb) -> bool:
  """Whether a traceback passes through Beam's or gRPC's code."""
  while tb is not None:
    name = tb.tb_frame.f_code.co_filename
    if f"{os.sep}apache_beam{os.sep}" in name or f"{os.sep}grpc{os.sep}" in name:
      return True
    tb = tb.tb_next
  return False
