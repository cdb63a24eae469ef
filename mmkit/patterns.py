"""Building blocks for the pattern notebooks: shipped handlers, splits, scores (01, 02, 03, 06).

Elements (made by `mmkit.inputs`) carry an id so the outputs of different branches can be
joined and scored: `(id, tensor)` in, `(id, PredictionResult)` out (a `KeyedModelHandler`
around one model passes the id through untouched).
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from mmkit import data, models

__all__ = [
  "shipped_handler",
  "keyed_by_id",
  "in_share",
  "labels_of",
  "predicted_label",
  "probabilities",
  "accuracy",
  "correct_of",
  "agreement",
  "arm_table",
  "true_label",
  "digit_index",
]


def shipped_handler(
  name: str, handler_class: type = PytorchModelHandlerTensor, **batching
) -> PytorchModelHandlerTensor:
  """Beam's PyTorch handler (or `handler_class`) for a model shipped in data/models (01-06).

  `batching` (min_batch_size, max_batch_size, ...) goes to Beam's handler, which hands it to
  BatchElements: equal batch sizes make stages' per-element costs comparable (02).
  """
  from mmkit.validate import check_state_dict

  cls, params = models.model_spec(name)
  check_state_dict(str(models.model_path(name)), cls, params)
  return handler_class(
    state_dict_path=str(models.model_path(name)),
    model_class=cls,
    model_params=params,
    device="CPU",
    **batching,
  )


def keyed_by_id(name: str) -> KeyedModelHandler:
  """A shipped model behind a KeyedModelHandler: takes (id, tensor), returns (id, prediction)."""
  return KeyedModelHandler(shipped_handler(name))


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


def correct_of(predicted: dict, labels: Sequence[int]) -> tuple[int, int]:
  """(correct, n) for one arm's {id: predicted label}: what an accuracy interval needs (01, 06)."""
  return sum(int(label == labels[i]) for i, label in predicted.items()), len(predicted)


def accuracy(predictions: Iterable[tuple[int, int]], labels: Sequence[int]) -> float:
  """Share of (id, predicted label) pairs that match `labels[id]`."""
  correct, n = correct_of(dict(predictions), labels)
  return correct / max(1, n)


def agreement(a: dict, b: dict) -> float:
  """Share of the ids both arms served on which they predict the same label (01, 06)."""
  common = a.keys() & b.keys()
  return sum(a[i] == b[i] for i in common) / max(1, len(common))


def arm_table(arms: dict, labels: Sequence[int], ms_per_element: Optional[dict] = None):
  """One row per arm (or ensemble member): elements served, accuracy, optional latency (01, 06)."""
  import pandas as pd

  rows = []
  for name, predicted in arms.items():
    row = {
      "arm": name,
      "elements": len(predicted),
      "accuracy": round(accuracy(predicted.items(), labels), 3),
    }
    if ms_per_element is not None:
      row["ms_per_element"] = round(ms_per_element.get(name, float("nan")), 3)
    rows.append(row)
  return pd.DataFrame(rows).set_index("arm")


@lru_cache(maxsize=None)
def _digits_by_pixels(source: str) -> dict:
  """{pixels as bytes: (index in the cohort, label)} of a cohort's test digits."""
  x, y = data.cohort(source, "test")
  return {row.tobytes(): (index, int(label)) for index, (row, label) in enumerate(zip(x, y))}


def _digit_of(source: str, result: PredictionResult) -> tuple[int, int]:
  return _digits_by_pixels(source)[result.example.numpy().astype(np.float32).tobytes()]


def true_label(source: str, result: PredictionResult) -> int:
  """The label of the digit a prediction was made for, found from its example (03).

  `PredictionResult.example` is the model's input: Beam keeps it so outputs can be joined
  back to inputs even when the key is needed for routing (keyed models).
  """
  return _digit_of(source, result)[1]


def digit_index(source: str, result: PredictionResult) -> int:
  """The index in its cohort of the digit a prediction was made for: pairs two scores (03)."""
  return _digit_of(source, result)[0]
