"""Nothing lost: elements that cannot be served go to a dead-letter output, with the reason (03).

`RouteByModel` sits before RunInference: an element whose key has no model, or whose
tensor does not have the model's input shape, leaves the main output as a `DeadLetter`
instead of failing the whole batch it would have joined. `InferOrDeadLetter` catches what
no check can see beforehand (a model that refuses a dtype, a NaN guard): Beam's
`RunInference(...).with_exception_handling()` hands over the failed batch, each of its
elements is tried again on its own, and only the ones that fail alone become DeadLetters.
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.ml.inference.base import ModelHandler, RunInference

__all__ = ["DeadLetter", "DEAD_LETTERS", "RouteByModel", "InferOrDeadLetter", "refused_elements"]

DEAD_LETTERS = "dead_letters"


class DeadLetter(NamedTuple):
  """An element that was not served: its key, the element, and why."""
  key: Any
  element: Any
  reason: str


class RouteByModel(beam.DoFn):
  """(key, example) on to the main output if a model can serve it, else a DeadLetter (tagged output)."""

  def __init__(self, keys: Iterable[Any], example_shape: Optional[Sequence[int]] = None):
    self._keys = frozenset(keys)
    self._shape = tuple(example_shape) if example_shape is not None else None

  def process(self, element):
    try:
      key, example = element
    except (TypeError, ValueError):
      yield pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(None, element, "not a (key, example) pair"))
      return
    if key not in self._keys:
      known = ", ".join(map(repr, sorted(self._keys, key=str)))
      yield pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(key, example, f"no model for key {key!r} (known: {known})"))
    elif self._shape is not None and tuple(getattr(example, "shape", ())) != self._shape:
      shape = tuple(getattr(example, "shape", ())) or type(example).__name__
      yield pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
          key, example, f"example shape {shape} does not match the model input {self._shape}"))
    else:
      yield element


def refused_elements(failure) -> list[DeadLetter]:
  """Beam's failed-inference record `(batch, (type, repr, traceback))` -> a DeadLetter per element."""
  batch, (_, error, _) = failure
  return [DeadLetter(key, example, f"the model refused it: {error}") for key, example in batch]


class InferOrDeadLetter(beam.PTransform):
  """(key, example) -> ((key, prediction), DeadLetters): RunInference that loses no element.

  A batch that raises is handed over by Beam's `with_exception_handling()`; its elements are
  tried again one at a time with `retry_handler` (the same models, batches of one), so one bad
  element no longer costs its batch-mates their predictions. An element that fails alone is a
  DeadLetter with the model's error. The retry has its own model manager: while it runs, a
  worker may hold up to twice `max_models_per_worker_hint` models.
  """

  def __init__(self, handler: ModelHandler, retry_handler: ModelHandler):
    super().__init__()
    self._handler = handler
    self._retry_handler = retry_handler

  def expand(self, examples):
    served, failed = examples | "RunInference" >> RunInference(self._handler).with_exception_handling()
    retried, refused = (failed.failed_inferences
                        | "Unbatch" >> beam.FlatMap(lambda failure: failure[0])
                        | "RetryOneByOne" >> RunInference(self._retry_handler).with_exception_handling())
    dead = refused.failed_inferences | "Refused" >> beam.FlatMap(refused_elements)
    return (served, retried) | "Served" >> beam.Flatten(), dead
