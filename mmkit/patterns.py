"""Building blocks for the pattern notebooks: handlers, id-keyed elements, scores (01, 02, 03, 06).

Elements carry an id so the outputs of different branches can be joined and scored:
`(id, tensor)` in, `(id, PredictionResult)` out (a `KeyedModelHandler` around one
model passes the id through untouched).
"""
from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import torch
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from mmkit import data, models

__all__ = ["shipped_handler", "keyed_by_id", "digit_ids", "ToTensor", "in_share", "labels_of",
           "predicted_label", "probabilities", "accuracy", "denoised_tensor"]


def shipped_handler(name: str) -> PytorchModelHandlerTensor:
  """Beam's PyTorch handler for a model shipped in data/models (01, 02, 03, 06)."""
  cls, params = models.model_spec(name)
  return PytorchModelHandlerTensor(state_dict_path=str(models.model_path(name)), model_class=cls,
                                   model_params=params, device="CPU")


def keyed_by_id(name: str) -> KeyedModelHandler:
  """A shipped model behind a KeyedModelHandler: takes (id, tensor), returns (id, prediction)."""
  return KeyedModelHandler(shipped_handler(name))


def digit_ids(source: str = "clean", n: Optional[int] = None) -> list[int]:
  """Ids (test-split positions) of the first `n` digits of a cohort: cheap elements to Create."""
  size = len(data.cohort(source, "test")[1])
  return list(range(size if n is None else min(n, size)))


@lru_cache(maxsize=None)
def _tensors(source: str) -> torch.Tensor:
  return torch.tensor(data.cohort(source, "test")[0])


class ToTensor(beam.DoFn):
  """id -> (id, float32 tensor [64]) of that digit seen through `source`; made in the worker."""

  def __init__(self, source: str = "clean"):
    self._source = source

  def process(self, element: int):
    yield element, _tensors(self._source)[element].clone()


def in_share(element_id, share: float) -> bool:
  """Deterministic split by id: True for about `share` of all ids, the same ids on every run."""
  return zlib.crc32(str(element_id).encode()) % 10_000 < share * 10_000


def labels_of(source: str = "clean") -> np.ndarray:
  """True labels of a cohort's test split, indexed by id."""
  return data.cohort(source, "test")[1]


def probabilities(result: PredictionResult) -> np.ndarray:
  """Softmax of a classifier's logits."""
  return torch.softmax(result.inference, dim=-1).numpy()


def predicted_label(result: PredictionResult) -> int:
  """The class a classifier's prediction picks."""
  return int(result.inference.argmax())


def denoised_tensor(result: PredictionResult) -> torch.Tensor:
  """Post-processing between the sequence's models: the denoiser's output, clipped to 0..1."""
  return result.inference.clamp(0.0, 1.0)


def accuracy(predictions: Iterable[tuple[int, int]], labels: Sequence[int]) -> float:
  """Share of (id, predicted label) pairs that match `labels[id]`."""
  pairs = list(predictions)
  return sum(int(label == labels[i]) for i, label in pairs) / max(1, len(pairs))
