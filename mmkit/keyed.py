"""Keyed model handlers with reproducible batching, and freeing what Beam keeps (taught in 03, 04).

Beam's `KeyedModelHandler` ignores the batching arguments of the handlers it wraps and
batches adaptively, so the number of model swaps changes from run to run. Fixing the
batch size makes a run's swaps reproducible (and predictable: see `mmkit.simulate`).
"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence

from apache_beam.ml.inference.base import (
  KeyedModelHandler,
  KeyModelMapping,
  ModelHandler,
  _ModelHandlerManager,
)
from apache_beam.utils import multi_process_shared

from mmkit.deadletter import ServeAloneOnFailure
from mmkit.faults import ModelLoadError, model_path_of

__all__ = [
  "FixedBatchKeyedModelHandler",
  "ObservedModelManager",
  "keyed_handler",
  "release_resident_models",
  "retire_models",
  "stop_proxy_servers",
  "remove_stale_rendezvous_files",
  "return_freed_memory",
]


class FixedBatchKeyedModelHandler(ServeAloneOnFailure, KeyedModelHandler):
  """A KeyedModelHandler whose batches all hold `batch_size` elements (the last may hold fewer).

  Each batch is split by key; every model a batch needs is loaded (if not resident) once,
  in order of first appearance in the batch. With `max_models_per_worker_hint=h`, the
  least recently used model is released when an (h+1)-th is needed.
  """

  def __init__(
    self,
    mappings: Sequence[KeyModelMapping],
    max_models_per_worker_hint: Optional[int] = None,
    batch_size: Optional[int] = None,
    stop_evicted_servers: bool = False,
  ):
    from mmkit.validate import SetupError, check_hint, check_mappings

    check_mappings(mappings)  # before Beam's own checks, whose messages name no fix
    check_hint(max_models_per_worker_hint, len(mappings))
    if batch_size is not None and (
      isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
      raise SetupError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    super().__init__(list(mappings), max_models_per_worker_hint=max_models_per_worker_hint)
    self.keys = [key for mapping in mappings for key in mapping.keys]
    self.batch_size = batch_size
    self._prebatched = False
    # True: stop evicted models' proxy servers during the run (bench/evicted_servers.py);
    # off by default, so a kit run's times are Beam's own.
    self.stop_evicted_servers = stop_evicted_servers

  def prebatched(self) -> "FixedBatchKeyedModelHandler":
    """A copy that takes ready-made batches (lists of (key, example), e.g. from GroupIntoBatches).

    Beam's own `with_no_batching()` cannot wrap a KeyedModelHandler with several models in
    Beam 2.77 (its wrapper skips `override_metrics`, so the per-key metrics are never set up).
    """
    twin = copy.copy(self)
    twin._prebatched = True
    return twin

  def should_skip_batching(self) -> bool:
    return self._prebatched

  def load_model(self):
    if self._single_model:
      return super().load_model()
    return ObservedModelManager(self._id_to_mh_map, self.stop_evicted_servers)

  def batch_elements_kwargs(self) -> Mapping[str, Any]:
    if self.batch_size is None:
      return super().batch_elements_kwargs()
    return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}


class ObservedModelManager(_ModelHandlerManager):
  """Beam's keyed model manager, telling what it decides and stopping what it forgets (04_memory).

  Beam's manager evicts the least recently used model before it loads one more than its
  cap, and raises the cap by the hint the first time each process uses it
  (`increment_max_models`). Neither is visible from outside, and an evicted model is freed
  only when the last batch holding it lets go. So each decision is recorded on the traced
  handler it concerns: `evict` (with the cap) and `cap` (the new cap, from Beam's own
  field). Untraced handlers record nothing. With `stop_evicted_servers`, an evicted model's
  proxy server is stopped once the model is freed (`retire_models`), which Beam never does.
  Relies on Beam 2.77's private
  `_ModelHandlerManager` (`tests/test_beam_findings.py` guards it).
  """

  RETIRE_EVERY = 16  # evicted models' servers left running at most (32 threads)

  def __init__(self, mh_map: dict[str, ModelHandler], stop_evicted_servers: bool = False):
    super().__init__(mh_map)
    self._stop_servers = stop_evicted_servers
    self._retiring: set[str] = set()  # tags of evicted models whose proxy server still runs
    self._users = 0  # processes that used this manager (each raised the cap once)
    self._failed: dict[str, ModelLoadError] = {}  # keys whose model failed to load, this run

  def load(self, key: str):
    # A model file that failed to load is not read again in this run: each element of its
    # batch is retried alone (ServeAloneOnFailure), and a corrupted 64 MB file would be read
    # once per element.
    if key in self._failed:
      raise self._failed[key]
    try:
      return self._load(key)
    except Exception as error:
      # Beam 2.77 has put the key in its LRU before loading and leaves it there without a
      # model: every later eviction of it raises KeyError, failing every batch after
      # (docs/beam_findings.md). Taken out, the other keys are served as before.
      tag = self._tag_map.get(key)
      if tag is not None and tag not in self._proxy_map:
        del self._tag_map[key]
        # Its server never started: only the rendezvous lock was written (and is free).
        _remove_rendezvous_files(os.path.join(tempfile.gettempdir(), tag + ".address"))
      failure = ModelLoadError.of(key, model_path_of(self._mh_map.get(key)), error)
      self._failed[key] = failure
      _record(self._mh_map.get(key), "load_failed", path=failure.path, error=str(failure))
      raise failure from error

  def _load(self, key: str):
    victim = None
    if (
      key not in self._tag_map
      and self._max_models is not None
      and self._max_models < len(self._tag_map) + 1
      and self._tag_map
    ):
      victim = next(iter(self._tag_map))  # Beam's LRU order: the oldest entry goes first
      self._retiring.add(self._tag_map[victim])
      _record(self._mh_map[victim], "evict", cap=self._max_models, resident=len(self._tag_map))
    stats = super().load(key)
    # Beam never stops an evicted model's server (two threads each, until the run's end).
    # Only while one process uses the manager: another process may have been handed the
    # evicted model's tag and be about to connect to its server (measured: stopping it then
    # failed that process's batch). Shared runs are cleaned up at their end instead.
    # Stopped in groups: one server at a time cost about 2 ms per load in thread wake-ups.
    if len(self._retiring) >= self.RETIRE_EVERY and self._stop_servers and self._users <= 1:
      self._retiring = retire_models(self._retiring)
    return stats

  def increment_max_models(self, increment: int):
    super().increment_max_models(increment)
    self._users += 1
    for mh in self._mh_map.values():
      if _record(mh, "cap", n=self._max_models, increment=increment):
        break  # once per decision, on the first traced handler


def _record(handler: ModelHandler, event: str, **fields) -> bool:
  """Records `event` on a traced handler (`mmkit.tracing.TracedModelHandler`); False if untraced."""
  record = getattr(handler, "record", None)
  if record is None:
    return False
  record(event, **fields)
  return True


def keyed_handler(
  handlers: Mapping[str, ModelHandler],
  hint: Optional[int] = None,
  batch_size: Optional[int] = None,
  shared: Optional[Mapping[str, Sequence[str]]] = None,
) -> FixedBatchKeyedModelHandler:
  """One model per key of `handlers`; `shared` maps a handler's key to extra keys it also serves."""
  shared = shared or {}
  mappings = [KeyModelMapping([key, *shared.get(key, ())], mh) for key, mh in handlers.items()]
  return FixedBatchKeyedModelHandler(
    mappings, max_models_per_worker_hint=hint, batch_size=batch_size
  )


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
