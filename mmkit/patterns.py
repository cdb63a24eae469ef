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

__all__ = [
  "shipped_handler",
  "check_sequence",
  "keyed_by_id",
  "digit_ids",
  "ToTensor",
  "in_share",
  "labels_of",
  "predicted_label",
  "probabilities",
  "accuracy",
  "denoised_tensor",
  "agreement",
  "arm_table",
  "true_label",
  "digits_figure",
  "keyed_metrics_frame",
]


def shipped_handler(name: str) -> PytorchModelHandlerTensor:
  """Beam's PyTorch handler for a model shipped in data/models (01, 02, 03, 06)."""
  from mmkit.validate import check_state_dict

  cls, params = models.model_spec(name)
  check_state_dict(str(models.model_path(name)), cls, params)
  return PytorchModelHandlerTensor(
    state_dict_path=str(models.model_path(name)), model_class=cls, model_params=params, device="CPU"
  )


def check_sequence(names: Sequence[str], example_shape: Sequence[int] = (64,)) -> None:
  """Fails fast, with the fix, if a model in `names` can't take the previous one's output (02)."""
  from mmkit.validate import check_sequence as check

  check([(name, models.load_model(name)) for name in names], example_shape)


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
def _label_by_pixels(source: str) -> dict:
  x, y = data.cohort(source, "test")
  return {row.tobytes(): int(label) for row, label in zip(x, y)}


def true_label(source: str, result: PredictionResult) -> int:
  """The label of the digit a prediction was made for, found from its example (03).

  `PredictionResult.example` is the model's input: Beam keeps it so outputs can be joined
  back to inputs even when the key is needed for routing (keyed models).
  """
  return _label_by_pixels(source)[result.example.numpy().astype(np.float32).tobytes()]


def digits_figure(rows: dict, n: int = 8):
  """A grid of digits: one row per named [N, 64] array, `n` columns (02)."""
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0))
  for r, (name, images) in enumerate(rows.items()):
    for c in range(n):
      ax = axes[r][c]
      ax.imshow(np.asarray(images[c]).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
      ax.set_xticks([]), ax.set_yticks([])
      ax.grid(False)
    axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
  fig.tight_layout()
  return fig


def keyed_metrics_frame(result):
  """Beam's per-cohort keyed-model metrics (DirectRunner result) as a DataFrame (03)."""
  import pandas as pd
  from apache_beam.metrics.metric import MetricsFilter

  query = result.metrics().query(MetricsFilter().with_namespace("BeamML_KeyedModels"))
  rows: dict = {}
  for kind in ("counters", "distributions"):
    for m in query[kind]:
      name = m.key.metric.name
      cohort, _, metric = name.rpartition("-_")
      value = m.committed if m.committed is not None else m.attempted
      cell = value if kind == "counters" else value.count
      rows.setdefault(cohort or "(all)", {})[
        metric + ("" if kind == "counters" else " (count)")
      ] = cell
  frame = pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int)
  wanted = [
    "num_inferences",
    "load_model_latency_milli_secs (count)",
    "inference_batch_latency_micro_secs (count)",
  ]
  return frame[[c for c in wanted if c in frame]].sort_index()
