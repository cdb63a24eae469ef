"""Nothing lost: elements that cannot be served go to a dead-letter output, with the reason (03).

`RouteByModel` sits before RunInference: an element whose key has no model, or whose
tensor does not have the model's input shape, leaves the main output as a `DeadLetter`
instead of failing the whole batch it would have joined.
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam import pvalue

__all__ = ["DeadLetter", "DEAD_LETTERS", "RouteByModel"]

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
