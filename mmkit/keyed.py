"""Keyed model handlers with reproducible batching, and freeing what Beam keeps (taught in 03, 04).

Beam's `KeyedModelHandler` ignores the batching arguments of the handlers it wraps and
batches adaptively, so the number of model swaps changes from run to run. Fixing the
batch size makes a run's swaps reproducible (and predictable: see `mmkit.simulate`).
"""
from __future__ import annotations

import copy
import os
import tempfile
from typing import Any, Mapping, Optional, Sequence

from apache_beam.ml.inference.base import KeyedModelHandler, KeyModelMapping, ModelHandler
from apache_beam.utils import multi_process_shared

__all__ = ["FixedBatchKeyedModelHandler", "keyed_handler", "release_resident_models"]


class FixedBatchKeyedModelHandler(KeyedModelHandler):
  """A KeyedModelHandler whose batches all hold `batch_size` elements (the last may hold fewer).

  Each batch is split by key; every model a batch needs is loaded (if not resident) once,
  in order of first appearance in the batch. With `max_models_per_worker_hint=h`, the
  least recently used model is released when an (h+1)-th is needed.
  """

  def __init__(self, mappings: Sequence[KeyModelMapping], max_models_per_worker_hint: Optional[int] = None,
               batch_size: Optional[int] = None):
    super().__init__(list(mappings), max_models_per_worker_hint=max_models_per_worker_hint)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
      raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    self.batch_size = batch_size
    self._prebatched = False

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

  def batch_elements_kwargs(self) -> Mapping[str, Any]:
    if self.batch_size is None:
      return super().batch_elements_kwargs()
    return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}


def keyed_handler(handlers: Mapping[str, ModelHandler], hint: Optional[int] = None,
                  batch_size: Optional[int] = None,
                  shared: Optional[Mapping[str, Sequence[str]]] = None) -> FixedBatchKeyedModelHandler:
  """One model per key of `handlers`; `shared` maps a handler's key to extra keys it also serves."""
  shared = shared or {}
  mappings = [KeyModelMapping([key, *shared.get(key, ())], mh) for key, mh in handlers.items()]
  return FixedBatchKeyedModelHandler(mappings, max_models_per_worker_hint=hint, batch_size=batch_size)


def release_resident_models() -> int:
  """Frees the keyed models Beam still holds in this process after a run; returns how many.

  Beam's keyed model manager keeps each loaded model in a process-wide registry of
  `MultiProcessShared` singletons. When the pipeline ends without evicting them, nothing
  releases them, so in a notebook every run leaves its resident models behind. This
  deletes the objects and the rendezvous files Beam wrote for them in the temp dir.
  """
  manager = multi_process_shared._process_level_singleton_manager
  freed = 0
  for tag, entry in list(manager.entries.items()):
    # Keyed model tags are uuid4 hex strings; other singletons (Beam's own) are left alone.
    if not (isinstance(tag, str) and len(tag) == 32 and _is_hex(tag)):
      continue
    if entry.initialied:
      entry.unsafe_hard_delete()
      freed += 1
    del manager.entries[tag]
    for suffix in (".address", ".lock"):
      try:
        os.remove(os.path.join(tempfile.gettempdir(), tag + suffix))
      except OSError:
        pass
  return freed


def _is_hex(text: str) -> bool:
  try:
    int(text, 16)
    return True
  except ValueError:
    return False
