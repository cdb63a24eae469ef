"""Keyed model handlers with reproducible batching, and what Beam's manager decides (03, 04).

Beam's `KeyedModelHandler` with several models ignores the batching arguments of the handlers it
wraps and batches adaptively, so the number of model swaps changes from run to run (finding 15).
Fixing the batch size makes a run's swaps reproducible (and predictable: see `mmkit.simulate`).
"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any, Mapping, Optional, Sequence

from apache_beam.ml.inference.base import (
  KeyedModelHandler,
  KeyModelMapping,
  ModelHandler,
  _ModelHandlerManager,
)

# Freeing what Beam keeps lives in mmkit.cleanup; two of its names stay here for 04_memory.
from mmkit.cleanup import (
  _remove_rendezvous_files,
  release_resident_models,
  retire_models,
  return_freed_memory,
)
from mmkit.deadletter import ServeAloneOnFailure
from mmkit.faults import ModelLoadError, model_path_of
from mmkit.sockets import nodelay_while_alive

__all__ = [
  "FixedBatchKeyedModelHandler",
  "ObservedModelManager",
  "keyed_handler",
  "release_resident_models",
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

  def set_environment_vars(self):
    # Beam calls this first in each process's RunInference setup, before it connects to the
    # shared model manager: Nagle's waits go from every process that uses the handler
    # (a batch proxied to another worker's model: 47 ms with them, 3 ms without).
    super().set_environment_vars()
    nodelay_while_alive(self)

  def run_inference(self, batch, model, inference_args=None):
    # Beam adds the hint to the shared manager's cap the first time each *copy* of the handler
    # runs a batch. The streaming DirectRunner makes a copy per bundle, so there the cap grows
    # by the hint every bundle and never holds (docs/beam_findings.md, section 18). The kit
    # adds it once per process, as Beam's docs describe the hint: per worker process.
    hint = self._max_models_per_worker_hint
    if hint is not None and not self._single_model:
      self._max_models_per_worker_hint = None  # Beam's own increment, skipped
      model.add_hint_once_per_process(os.getpid(), hint)
    return super().run_inference(batch, model, inference_args)

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
    self._hinted: set[int] = set()  # the processes whose hint is in the cap
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

  def add_hint_once_per_process(self, pid: int, hint: int) -> None:
    """Adds `hint` to the cap the first time process `pid` asks; later asks change nothing."""
    if pid not in self._hinted:
      self._hinted.add(pid)
      self.increment_max_models(hint)

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
