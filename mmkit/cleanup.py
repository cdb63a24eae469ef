"""Freeing what a Beam run leaves behind in this process, in one place (04_memory).

Beam 2.77 keeps every keyed model it loaded resident after the pipeline ends, starts a proxy
server (two threads and a socket) per model load that nothing stops, leaves rendezvous files
in the temp dir, and the InteractiveRunner leaves a few `beam-pipeline-temp*` dirs per run;
glibc keeps freed heap pages; an interrupted or failed run may leave worker processes.
`clean_up` frees all of it; `mmkit.experiment.run_keyed` calls it on every path (normal end,
failure, interrupt). The helpers below are its steps, for code that runs its own pipelines.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Iterable, Optional

from apache_beam.utils import multi_process_shared

from mmkit.workers import stop_worker_processes

__all__ = [
  "clean_up",
  "release_resident_models",
  "retire_models",
  "stop_proxy_servers",
  "remove_stale_rendezvous_files",
  "return_freed_memory",
  "forget_interactive_pipeline",
]


def clean_up(
  pipeline: Any = None,
  workers_before: Optional[set[int]] = None,
  rss: Optional[Callable[[], float]] = None,
) -> dict[str, float]:
  """Frees what a run left in this process: its models, their servers and files, heap memory.

  `pipeline`: an InteractiveRunner pipeline is forgotten too (its temp dirs removed).
  `workers_before`: the child processes from before the run; the others (workers a failed or
  interrupted run left) are ended. None leaves child processes alone: at a normal end Beam
  has ended its workers, and the tracer's memory sampler is a child still needed.
  `rss`: reads this process's memory (MB); returns it after the models are freed and after
  the heap is trimmed, as `rss_after_free_mb` and `rss_after_trim_mb`.
  """
  memory = {}
  release_resident_models(trim=False)
  if rss is not None:
    memory["rss_after_free_mb"] = rss()
  return_freed_memory()
  if rss is not None:
    memory["rss_after_trim_mb"] = rss()
  if workers_before is not None:
    stop_worker_processes(exclude=workers_before)
  if pipeline is not None and type(pipeline.runner).__name__ == "InteractiveRunner":
    forget_interactive_pipeline(pipeline)
  return memory


def forget_interactive_pipeline(pipeline: Any) -> None:
  """Undoes `new_pipeline("interactive")` after a run: untracks it, drops its cache and temp dirs.

  Evicting alone leaves the `beam-pipeline-temp*` dirs of the pipeline and of the pipelines
  the InteractiveRunner derived from it (Beam 2.77 removes them only when the whole
  environment is cleared), so a notebook re-running a pipeline leaves a few dirs per run.
  """
  import shutil

  from apache_beam.runners.interactive import interactive_environment

  env = interactive_environment.current_env()
  # No public way lists a user pipeline's derived pipelines; without it only its own dir goes.
  derived = list(getattr(env._tracked_user_pipelines, "_user_pipelines", {}).get(pipeline, ()))
  env.cleanup(pipeline)
  env.evict_tracked_pipelines(pipeline)
  for each in (pipeline, *derived):
    shutil.rmtree(each.local_tempdir, ignore_errors=True)


def release_resident_models(trim: bool = True) -> int:
  """Frees what Beam's keyed models leave in this process after a run; returns how many models.

  Beam's keyed model manager keeps each loaded model in a process-wide registry of
  `MultiProcessShared` singletons, and starts a proxy server (two threads and a listening
  socket) for every model it loads, evicted ones included. When the pipeline ends nothing
  stops them: in a notebook every run leaves its resident models behind, and a thrashing
  run leaves thousands of threads. This frees the models, stops their servers and removes
  the rendezvous files Beam wrote in the temp dir; `trim` then hands freed heap memory back
  to the system (`return_freed_memory`).
  """
  manager = multi_process_shared._process_level_singleton_manager
  freed = 0
  # A run stopped mid-load: the load goes on in a proxy server's handler thread (Beam serves
  # the keyed manager through one) and registers its model after the first sweep; retiring
  # the servers joins those threads, so a second sweep finds it (measured: 1 stop in 25).
  for _ in range(3):
    # Tags Beam makes per run start with a uuid4 hex: keyed models (the bare uuid), and each
    # RunInference's model status and copies (uuid + suffix). Other singletons are left alone.
    tags = [
      tag
      for tag in list(manager.entries)
      if isinstance(tag, str) and len(tag) >= 32 and _is_hex(tag[:32])
    ]
    if not tags:
      break
    freed += sum(1 for tag in tags if len(tag) == 32 and manager.entries[tag].initialied)
    retire_models(tags, force=True)
  remove_stale_rendezvous_files()  # those of dead worker processes' servers
  if trim:
    return_freed_memory()
  return freed


def retire_models(tags: Iterable[str], force: bool = False) -> set[str]:
  """Stops the proxy servers of these shared models once freed (`force`: frees them first).

  Returns the tags whose model something still holds (left for a later call). Each server
  left running keeps two threads until the run ends (6,407 threads after 3,200 loads);
  stopping them mid-run costs about 1.5 ms per load and saves little on a quiet machine, but
  on one crowded with threads a 1,600-load run took 75 s as is and 9 s with them stopped
  (`python bench/evicted_servers.py`, docs/beam_findings.md section 1).
  """
  manager = multi_process_shared._process_level_singleton_manager
  addresses, held, files = set(), set(), []
  for tag in tags:
    entry = manager.entries.get(tag)
    if entry is not None and entry.initialied:
      if not force:
        held.add(tag)
        continue
      entry.unsafe_hard_delete()
    manager.entries.pop(tag, None)
    address_file = os.path.join(tempfile.gettempdir(), tag + ".address")
    address = _read_address(address_file)
    if address:
      addresses.add(address)
      files.append(address_file)
  stop_proxy_servers(addresses)
  _forget_proxy_connections(addresses)
  for address_file in files:
    _remove_rendezvous_files(address_file)
  return held


def remove_stale_rendezvous_files(directory: Optional[str] = None) -> int:
  """Removes the rendezvous files of shared objects whose server is gone; returns how many objects.

  Each `MultiProcessShared` object (a keyed model, a model status) leaves `<tag>.address` and
  `<tag>.lock` in the temp dir. Beam deletes an address only when a later process fails to
  connect to it; under the multi-processing runner the servers die with the worker processes
  and the files stay (measured: 36 files per run of 2 models). The same test as Beam's decides
  what is stale: nothing accepts a connection at the address. A lock someone holds is left.
  """
  import glob
  import socket

  removed = 0
  for address_file in glob.glob(os.path.join(directory or tempfile.gettempdir(), "*.address")):
    tag = os.path.basename(address_file)[: -len(".address")]
    if not (len(tag) >= 32 and _is_hex(tag[:32])):
      continue  # not one of Beam's per-run tags
    address = _read_address(address_file)
    if address is None:
      continue  # unreadable or half-written: leave it to Beam
    try:
      with socket.create_connection(address, timeout=0.5):
        continue  # a live server
    except ConnectionRefusedError:
      pass
    except OSError:
      continue
    removed += _remove_rendezvous_files(address_file)
  return removed


def _remove_rendezvous_files(address_file: str) -> bool:
  """Removes `<tag>.address` and `<tag>.lock` unless another process holds the lock."""
  import fasteners

  lock = fasteners.InterProcessLock(address_file[: -len(".address")] + ".lock")
  if not lock.acquire(blocking=False):
    return False
  try:
    for path in (address_file, lock.path):
      try:
        os.remove(path)
      except OSError:
        pass
  finally:
    lock.release()
  return True


def return_freed_memory() -> bool:
  """Asks glibc to hand freed heap memory back to the system (`malloc_trim`); False elsewhere.

  Freed models do not always lower the resident memory: the allocator keeps freed pages for
  reuse. Measured here: about 130 MB kept after a thrashing run of 16 MB models, returned by this.
  """
  import ctypes
  import gc

  gc.collect()
  try:
    return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
  except (OSError, AttributeError):
    return False


class _StopAccepting:
  """Stands in for a server's listener: the accept loop's next call ends its thread."""

  address = None

  def accept(self):
    raise SystemExit  # threads end quietly on SystemExit


def stop_proxy_servers(addresses: set) -> int:
  """Stops the in-process `multiprocessing` manager servers listening on `addresses`.

  `Server.serve_forever` has no stop method, and its accept loop retries forever on a closed
  socket; so the listener is swapped for one that ends the loop, the blocked accept is woken
  by a connection, and the stop event ends the serving thread. That thread resets
  `sys.stdout` on its way out (a Jupyter kernel's would be lost), so it is restored here.
  """
  import socket
  import sys
  import threading
  from multiprocessing.managers import Server

  servers, handlers = {}, []
  for thread in threading.enumerate():
    target = getattr(thread, "_target", None)
    server = getattr(target, "__self__", None)
    if not (isinstance(server, Server) and tuple(server.address) in addresses):
      continue
    if target.__name__ in ("serve_forever", "accepter"):
      servers.setdefault(id(server), (server, []))[1].append(thread)
    elif target.__name__ == "handle_request" and (args := getattr(thread, "_args", None)):
      # A connection handler serves one client proxy until it hangs up. The proxies live in
      # Beam's finished DoFns, which the server's own objects keep alive: a cycle through a
      # running thread that no garbage collection breaks. Hanging up here ends it.
      # (Its connection is taken now: a thread that ends drops its arguments.)
      handlers.append((thread, args[0]))
  stdout, stderr = sys.stdout, sys.stderr
  listeners = []
  try:
    # All servers at once, in three sweeps: one at a time costs ~20 ms each in thread wake-ups.
    for server, _ in servers.values():
      listeners.append(server.listener)
      server.listener = _StopAccepting()
      try:
        with socket.create_connection(tuple(server.address), timeout=1):
          pass
      except OSError:
        pass
      if hasattr(server, "stop_event"):
        server.stop_event.set()
    for _, connection in handlers:
      _hang_up(connection)
    for thread in [t for _, threads in servers.values() for t in threads] + [
      t for t, _ in handlers
    ]:
      thread.join(timeout=2)
  finally:
    sys.stdout, sys.stderr = stdout, stderr
    for listener in listeners:
      listener.close()
  return len(servers)


def _forget_proxy_connections(addresses: set) -> None:
  """Drops the client connections `multiprocessing` caches per server address (and per thread).

  Proxies keep them in a class-level table that outlives the proxies, so each stopped server
  would otherwise leave an open socket in every thread that talked to it.
  """
  from multiprocessing.managers import BaseProxy

  for address in addresses:
    local, _ = BaseProxy._address_to_local.pop(address, (None, None))
    connection = getattr(local, "connection", None)
    if connection is not None:
      connection.close()


def _hang_up(connection) -> None:
  """Shuts a `multiprocessing` connection's socket down, which wakes a thread blocked reading it."""
  import socket

  try:
    with socket.socket(fileno=os.dup(connection.fileno())) as sock:
      sock.shutdown(socket.SHUT_RDWR)
  except (OSError, ValueError):
    pass  # already closed


def _read_address(path: str) -> Optional[tuple[str, int]]:
  """The (host, port) a `MultiProcessShared` rendezvous file names, or None."""
  try:
    with open(path) as f:
      host, port = f.read().rsplit(":", 1)
    return host, int(port)
  except (OSError, ValueError):
    return None


def _is_hex(text: str) -> bool:
  try:
    int(text, 16)
    return True
  except ValueError:
    return False
