"""Keyed RunInference that swaps models reproducibly and loses no element (03, 04, 05).

Copy this file with `beam_private.py` into a project (standard library, Beam and torch only);
`python keyed.py` runs its example: two models, fixed batches, a model file that fails to
load served as dead letters.

- `FixedBatchKeyedModelHandler` (`keyed_handler` builds one): Beam's `KeyedModelHandler` with
  several models ignores the batching arguments of the handlers it wraps and batches
  adaptively, so the number of model swaps changes from run to run (finding 15). Fixing the
  batch size makes a run's swaps reproducible (and predictable: `simulate.py`). It also adds
  the hint to the cap once per process (finding 18), takes Nagle's waits off the sockets of
  Beam's shared models (finding 13) and serves a failed batch again element by element.
- `ObservedModelManager`: Beam's keyed model manager, telling what it decides, and surviving a
  model file that fails to load (finding 12).
- Dead letters: `RouteByModel` before RunInference, `InferOrDeadLetter` around it. An element
  whose key has no model, whose shape is wrong, or whose model fails, leaves as a `DeadLetter`
  with the reason instead of failing its batch.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.ml.inference.base import (
  KeyedModelHandler,
  KeyModelMapping,
  ModelHandler,
  RunInference,
)

try:
  from mmkit.core import beam_private
except ImportError:  # copied into a project beside beam_private.py
  import beam_private

__all__ = [
  "SetupError",
  "ModelLoadError",
  "check_mappings",
  "check_hint",
  "FixedBatchKeyedModelHandler",
  "ObservedModelManager",
  "keyed_handler",
  "DeadLetter",
  "DEAD_LETTERS",
  "RouteByModel",
  "Refused",
  "SplitRefused",
  "failed_batch",
  "InferOrDeadLetter",
]


class SetupError(ValueError):
  """A model, mapping, hint or input that cannot work, found before the pipeline runs."""


class ModelLoadError(RuntimeError):
  """One model could not be loaded: names the key and the file (raised inside the pipeline)."""

  def __init__(self, message: str, key: Any = None, path: Optional[str] = None):
    super().__init__(message)  # one argument: the error pickles (worker processes)
    self.key, self.path = key, path

  @classmethod
  def of(cls, key: Any, path: Optional[str], error: BaseException) -> "ModelLoadError":
    detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return cls(
      f"model file {path} for key {key!r} could not be loaded ({detail}): it was deleted or "
      "changed after the run was validated? Restore it, or check it with "
      "mmkit.validate.check_state_dict (the kit).",
      key,
      path,
    )


def check_mappings(mappings: Sequence[Any]) -> None:
  """Each KeyModelMapping has keys, and no key is mapped to two models."""
  if not mappings:
    raise SetupError("no KeyModelMapping given: map at least one list of keys to a model handler.")
  owner: dict = {}
  for index, mapping in enumerate(mappings):
    if not list(mapping.keys):
      raise SetupError(
        f"KeyModelMapping #{index} has an empty key list: give it the keys its model serves, "
        "or drop it."
      )
    for key in mapping.keys:
      if owner.get(key) == index:
        # Beam 2.77 rejects this with "key ... maps to multiple model handlers", though there
        # is one handler (the Dataflow page's own example lists KEY_5 twice).
        raise SetupError(
          f"key {key!r} is listed twice in KeyModelMapping #{index}: list each key "
          "once (e.g. list(dict.fromkeys(keys)))."
        )
      if key in owner:
        raise SetupError(
          f"key {key!r} is mapped to two models (KeyModelMapping #{owner[key]} and #{index}): "
          "a key must name exactly one model; remove it from one of them."
        )
      owner[key] = index


def check_hint(hint: Any, n_models: int) -> None:
  """A hint is None or a whole number >= 1; above the number of models it only warns."""
  if hint is None:
    return
  if isinstance(hint, bool) or not isinstance(hint, int):
    raise SetupError(
      f"max_models_per_worker_hint must be a whole number, got {hint!r} "
      f"({type(hint).__name__}): e.g. max_models_per_worker_hint=2."
    )
  if hint < 1:
    raise SetupError(
      f"max_models_per_worker_hint must be >= 1, got {hint}: a worker needs room for at "
      "least the model it is serving (None means no limit)."
    )
  if hint > n_models:
    warnings.warn(
      f"max_models_per_worker_hint={hint} is above the {n_models} models mapped: it changes "
      "nothing (every model stays resident), which is fine if that is what you meant.",
      stacklevel=3,
    )


class Refused(NamedTuple):
  """What a handler serving alone on failure returns instead of a prediction it could not make."""

  example: Any
  reason: str


class FixedBatchKeyedModelHandler(KeyedModelHandler):
  """A KeyedModelHandler whose batches all hold `batch_size` elements (the last may hold fewer).

  Each batch is split by key; every model a batch needs is loaded (if not resident) once,
  in order of first appearance in the batch. With `max_models_per_worker_hint=h`, the
  least recently used model is released when an (h+1)-th is needed.

  On the copy `serving_alone_on_failure()` makes (`InferOrDeadLetter` uses it), a batch that
  raises is served again one element at a time with the same model manager (so the hint
  still holds), and an element that fails alone comes out as `(key, Refused(example, reason))`.
  The retry happens inside RunInference rather than in a step after its failed output because
  merging two prediction streams takes a Flatten, which the DirectRunner materialises:
  measured, it made every run 2x slower, failures or not (`python bench/dead_letters.py`).
  """

  _serve_alone = False

  def __init__(
    self,
    mappings: Sequence[KeyModelMapping],
    max_models_per_worker_hint: Optional[int] = None,
    batch_size: Optional[int] = None,
    stop_evicted_servers: bool = False,
  ):
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

  def serving_alone_on_failure(self) -> "FixedBatchKeyedModelHandler":
    """A copy that serves a failed batch again element by element (see the class docstring)."""
    twin = copy.copy(self)
    twin._serve_alone = True
    return twin

  def should_skip_batching(self) -> bool:
    return self._prebatched

  def set_environment_vars(self):
    # Beam calls this first in each process's RunInference setup, before it connects to the
    # shared model manager: Nagle's waits go from every process that uses the handler
    # (a batch proxied to another worker's model: 47 ms with them, 3 ms without).
    super().set_environment_vars()
    beam_private.nodelay_while_alive(self)

  def run_inference(self, batch, model, inference_args=None):
    # Beam adds the hint to the shared manager's cap the first time each *copy* of the handler
    # runs a batch. The streaming DirectRunner makes a copy per bundle, so there the cap grows
    # by the hint every bundle and never holds (docs/beam_findings.md, section 18). The kit
    # adds it once per process, as Beam's docs describe the hint: per worker process.
    hint = beam_private.keyed_handler_hint(self)
    if hint is not None and not beam_private.is_single_model(self):
      beam_private.skip_beams_hint_increment(self)
      model.add_hint_once_per_process(os.getpid(), hint)
    if not self._serve_alone:
      return super().run_inference(batch, model, inference_args)
    try:
      return list(super().run_inference(batch, model, inference_args))
    except Exception:  # what with_exception_handling would catch: retry element by element
      pass
    served = []
    for key, example in batch:
      try:
        served.extend(super().run_inference([(key, example)], model, inference_args))
      except ModelLoadError as error:  # its model, not the element, is at fault: say so
        served.append((key, Refused(example, str(error))))
      except Exception as error:
        served.append((key, Refused(example, f"the model refused it: {error!r}")))
    return served

  def load_model(self):
    if beam_private.is_single_model(self):
      return super().load_model()
    return ObservedModelManager(beam_private.keyed_handlers_by_id(self), self.stop_evicted_servers)

  def batch_elements_kwargs(self) -> Mapping[str, Any]:
    if self.batch_size is None:
      return super().batch_elements_kwargs()
    return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}


class ObservedModelManager(beam_private.KeyedModelManager):
  """Beam's keyed model manager, telling what it decides and stopping what it forgets (04_memory).

  Beam's manager evicts the least recently used model before it loads one more than its
  cap, and raises the cap by the hint the first time each process uses it
  (`increment_max_models`). Neither is visible from outside, and an evicted model is freed
  only when the last batch holding it lets go. So each decision is recorded on the traced
  handler it concerns: `evict` (with the cap) and `cap` (the new cap, from Beam's own
  field). Untraced handlers record nothing. With `stop_evicted_servers`, an evicted model's
  proxy server is stopped once the model is freed (`retire_models`), which Beam never does.
  Built on Beam's private manager class, read through `beam_private`.
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
      lru, handlers = beam_private.manager_lru(self), beam_private.manager_handlers(self)
      tag = lru.get(key)
      if tag is not None and tag not in beam_private.manager_servers(self):
        del lru[key]
        # Its server never started: only the rendezvous lock was written (and is free).
        beam_private.remove_rendezvous_files(os.path.join(tempfile.gettempdir(), tag + ".address"))
      failure = ModelLoadError.of(key, beam_private.model_path_of(handlers.get(key)), error)
      self._failed[key] = failure
      _record(handlers.get(key), "load_failed", path=failure.path, error=str(failure))
      raise failure from error

  def _load(self, key: str):
    lru, cap = beam_private.manager_lru(self), beam_private.manager_cap(self)
    if key not in lru and cap is not None and cap < len(lru) + 1 and lru:
      victim = next(iter(lru))  # Beam's LRU order: the oldest entry goes first
      self._retiring.add(lru[victim])
      victim_handler = beam_private.manager_handlers(self)[victim]
      _record(victim_handler, "evict", cap=cap, resident=len(lru))
    stats = super().load(key)
    # Beam never stops an evicted model's server (two threads each, until the run's end).
    # Only while one process uses the manager: another process may have been handed the
    # evicted model's tag and be about to connect to its server (measured: stopping it then
    # failed that process's batch). Shared runs are cleaned up at their end instead.
    # Stopped in groups: one server at a time cost about 2 ms per load in thread wake-ups.
    if len(self._retiring) >= self.RETIRE_EVERY and self._stop_servers and self._users <= 1:
      self._retiring = beam_private.retire_models(self._retiring)
    return stats

  def add_hint_once_per_process(self, pid: int, hint: int) -> None:
    """Adds `hint` to the cap the first time process `pid` asks; later asks change nothing."""
    if pid not in self._hinted:
      self._hinted.add(pid)
      self.increment_max_models(hint)

  def increment_max_models(self, increment: int):
    super().increment_max_models(increment)
    self._users += 1
    for mh in beam_private.manager_handlers(self).values():
      if _record(mh, "cap", n=beam_private.manager_cap(self), increment=increment):
        break  # once per decision, on the first traced handler


def _record(handler: ModelHandler, event: str, **fields) -> bool:
  """Records `event` on a traced handler (`tracer.TracedModelHandler`); False if untraced."""
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


DEAD_LETTERS = "dead_letters"


class DeadLetter(NamedTuple):
  """An element that was not served: its key, the element, and why."""

  key: Any
  element: Any
  reason: str


class RouteByModel(beam.DoFn):
  """(key, example) to the main output if a model can serve it, else a DeadLetter (tagged)."""

  def __init__(self, keys: Iterable[Any], example_shape: Optional[Sequence[int]] = None):
    self._keys = frozenset(keys)
    self._shape = tuple(example_shape) if example_shape is not None else None

  def process(self, element):
    try:
      key, example = element
    except (TypeError, ValueError):
      yield pvalue.TaggedOutput(
        DEAD_LETTERS, DeadLetter(None, element, "not a (key, example) pair")
      )
      return
    if key not in self._keys:
      known = ", ".join(map(repr, sorted(self._keys, key=str)))
      yield pvalue.TaggedOutput(
        DEAD_LETTERS, DeadLetter(key, example, f"no model for key {key!r} (known: {known})")
      )
    elif self._shape is not None and tuple(getattr(example, "shape", ())) != self._shape:
      shape = tuple(getattr(example, "shape", ())) or type(example).__name__
      yield pvalue.TaggedOutput(
        DEAD_LETTERS,
        DeadLetter(
          key, example, f"example shape {shape} does not match the model input {self._shape}"
        ),
      )
    else:
      yield element


class SplitRefused(beam.DoFn):
  """(key, prediction or Refused) -> (key, prediction) on the main output, DeadLetters tagged."""

  def process(self, element):
    key, value = element
    if isinstance(value, Refused):
      yield pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(key, value.example, value.reason))
    else:
      yield element


def failed_batch(failure) -> list[DeadLetter]:
  """Beam's failed-inference record `(batch, (type, repr, traceback))` -> DeadLetters."""
  batch, (_, error, _) = failure
  return [DeadLetter(key, example, f"its batch failed: {error}") for key, example in batch]


class InferOrDeadLetter(beam.PTransform):
  """(key, example) -> ((key, prediction), DeadLetters): RunInference that loses no element.

  `handler` is a `FixedBatchKeyedModelHandler` (`keyed_handler` makes one): one bad element no
  longer costs its batch-mates their predictions. Whatever still escapes the
  handler (Beam's `with_exception_handling()` catches it) fails its batch into DeadLetters.
  """

  def __init__(self, handler: ModelHandler):
    super().__init__()
    if not isinstance(handler, FixedBatchKeyedModelHandler):
      raise TypeError(
        f"InferOrDeadLetter needs a FixedBatchKeyedModelHandler, got "
        f"{type(handler).__name__}: build it with keyed_handler(...)."
      )
    self._handler = handler.serving_alone_on_failure()

  def expand(self, examples):
    served, failed = (
      examples | "RunInference" >> RunInference(self._handler).with_exception_handling()
    )
    split = served | "SplitRefused" >> beam.ParDo(SplitRefused()).with_outputs(
      DEAD_LETTERS, main="served"
    )
    unserved = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_batch)
    return split.served, (split[DEAD_LETTERS], unserved) | "DeadLetters" >> beam.Flatten()


def _example() -> dict:
  """Models a and b serve keys a and b in batches of 4 with room for one model at a time; the
  file of key c's model is damaged, so c's elements come out as dead letters with the reason."""
  import tempfile

  import torch
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
  from apache_beam.options.pipeline_options import PipelineOptions

  folder = tempfile.mkdtemp(prefix="keyed-example-")
  handlers = {}
  for key in "abc":
    path = os.path.join(folder, f"{key}.pt")
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    params = {"in_features": 4, "out_features": 2}
    handlers[key] = PytorchModelHandlerTensor(path, torch.nn.Linear, params, device="CPU")
  with open(os.path.join(folder, "c.pt"), "wb") as damaged:
    damaged.write(b"not a state dict")
  examples = [(key, torch.full((4,), float(i))) for i in range(6) for key in "abc"]
  pipeline = beam.Pipeline(options=PipelineOptions(runner="DirectRunner"))
  served, dead = (
    pipeline
    | beam.Create(examples, reshuffle=False)
    | InferOrDeadLetter(keyed_handler(handlers, hint=1, batch_size=4))
  )
  _ = served | "CountServed" >> beam.Map(_count, "served")
  _ = dead | "Reasons" >> beam.Map(lambda letter: _count(letter, letter.reason.split(" (")[0]))
  result = pipeline.run()
  result.wait_until_finish()
  counters = {
    c.key.metric.name: c.committed
    for c in result.metrics().query()["counters"]
    if c.key.metric.namespace == "keyed_example"
  }
  loads = [
    d.committed.count
    for d in result.metrics().query()["distributions"]
    if d.key.metric.name == "load_model_latency_milli_secs"
  ]
  return {"counters": counters, "beam_loads": sum(loads)}


def _count(element: Any, name: str) -> Any:
  beam.metrics.Metrics.counter("keyed_example", name).inc()
  return element


if __name__ == "__main__":
  import json

  print(json.dumps(_example()))
