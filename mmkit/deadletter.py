"""Nothing lost: elements that cannot be served go to a dead-letter output, with the reason (03).

`RouteByModel` sits before RunInference: an element whose key has no model, or whose
tensor does not have the model's input shape, leaves the main output as a `DeadLetter`
instead of failing the whole batch it would have joined. `InferOrDeadLetter` catches what
no check can see beforehand (a model that refuses a dtype, a NaN guard): a batch that
raises is served again one element at a time inside the same RunInference
(`ServeAloneOnFailure`), and only the elements that fail alone become DeadLetters. Beam's
`RunInference(...).with_exception_handling()` stays around it as the last net.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.ml.inference.base import ModelHandler, RunInference

__all__ = [
  "DeadLetter",
  "DEAD_LETTERS",
  "RouteByModel",
  "Refused",
  "ServeAloneOnFailure",
  "SplitRefused",
  "failed_batch",
  "InferOrDeadLetter",
]

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


class Refused(NamedTuple):
  """What `ServeAloneOnFailure` returns instead of a prediction for an element its model refused."""

  example: Any
  reason: str


class ServeAloneOnFailure:
  """ModelHandler mixin for `(key, example)` batches: a batch that raises is served one by one.

  Active only on the copy `serving_alone_on_failure()` makes, so the handler itself keeps
  Beam's behaviour (a batch fails as a whole). On that copy, each element of a failed batch
  is run alone with the same model manager (so `max_models_per_worker_hint` still holds),
  and one that fails alone comes out as `(key, Refused(example, reason))`.
  The retry happens inside RunInference rather than in a step after its failed output
  because merging two prediction streams takes a Flatten, which the DirectRunner
  materialises: measured, it made every run 2x slower, failures or not (`bench/dead_letters.py`).
  """

  _serve_alone = False

  def serving_alone_on_failure(self):
    twin = copy.copy(self)
    twin._serve_alone = True
    return twin

  def run_inference(self, batch, model, inference_args=None):
    if not self._serve_alone:
      return super().run_inference(batch, model, inference_args)
    try:
      return list(super().run_inference(batch, model, inference_args))
    except Exception:  # what with_exception_handling would catch: retry element by element
      pass
    from mmkit.faults import ModelLoadError

    served = []
    for key, example in batch:
      try:
        served.extend(super().run_inference([(key, example)], model, inference_args))
      except ModelLoadError as error:  # its model, not the element, is at fault: say so
        served.append((key, Refused(example, str(error))))
      except Exception as error:
        served.append((key, Refused(example, f"the model refused it: {error!r}")))
    return served


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

  `handler` must mix in `ServeAloneOnFailure` (the kit's `keyed_handler` does): one bad
  element no longer costs its batch-mates their predictions. Whatever still escapes the
  handler (Beam's `with_exception_handling()` catches it) fails its batch into DeadLetters.
  """

  def __init__(self, handler: ModelHandler):
    super().__init__()
    if not isinstance(handler, ServeAloneOnFailure):
      raise TypeError(
        f"InferOrDeadLetter needs a handler that mixes in ServeAloneOnFailure, got "
        f"{type(handler).__name__}: build it with mmkit.keyed.keyed_handler."
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
