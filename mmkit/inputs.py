"""The elements a pipeline is fed, and the DoFns that make tensors of them (01, 02, 03, 06).

Elements travel as cheap ids or `(key, index)` pairs and become tensors inside the pipeline,
from the cohort tensor each worker makes once: pickling a tensor that is a view of a bigger
one would ship the whole storage.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import torch

from mmkit import data

__all__ = [
  "cohort_tensor",
  "digit_ids",
  "keyed_examples",
  "ToTensor",
  "ToKeyedTensor",
  "ToKeyedTensorOrPass",
]


@lru_cache(maxsize=None)
def cohort_tensor(source: str) -> torch.Tensor:
  """The test split of a cohort as one float32 tensor [n, 64], made once per process."""
  x, _ = data.cohort(source, "test")
  return torch.tensor(x, dtype=torch.float32)  # a copy: the cached cohort arrays are read-only


def digit_ids(source: str = "clean", n: Optional[int] = None) -> list[int]:
  """Ids (test-split positions) of the first `n` digits of a cohort: cheap elements to Create."""
  size = len(data.cohort(source, "test")[1])
  return list(range(size if n is None else min(n, size)))


def keyed_examples(stream: Sequence[str], seed: int = 0) -> list[tuple[str, int]]:
  """Pairs each key of a stream with a test-split digit index: cheap elements to `beam.Create`."""
  n_test = len(data.split_indices("test"))
  # A generator of its own: seeded like the key stream's, the same draws would tie each key
  # to a narrow band of indices (key k of 8 would only ever get digits from the k-th eighth).
  rng = np.random.default_rng((seed, 1))
  return [(key, int(i)) for key, i in zip(stream, rng.integers(0, n_test, size=len(stream)))]


class ToTensor(beam.DoFn):
  """id -> (id, float32 tensor [64]) of that digit seen through `source`; made in the worker."""

  def __init__(self, source: str = "clean"):
    self._source = source

  def process(self, element: int):
    yield element, cohort_tensor(self._source)[element].clone()


class ToKeyedTensor(beam.DoFn):
  """(key, index) -> (key, float32 tensor [64]) of that digit seen through the key's source."""

  def process(self, element):
    key, index = element
    yield key, cohort_tensor(data.source_of(key))[index].clone()


class ToKeyedTensorOrPass(ToKeyedTensor):
  """Like ToKeyedTensor, but (key, tensor) elements pass through unchanged."""

  def process(self, element):
    key, example = element
    if isinstance(example, torch.Tensor):
      yield element
    else:
      yield from super().process(element)
