"""Feeding RunInference fast: index ranges in, blocks built in the worker, a result a block (01).

The common example style, `beam.Create([tensor, ...]) | RunInference(handler)`, pickles every
tensor and pays Beam's per-element cost once per row. The recipe here moves only `(start,
stop)` ranges, builds each block of rows inside the worker (from data the worker loads
itself, never from a closure that would be pickled with the DoFn), and runs one forward
pass per block through a batch-aware inference function that returns one
`PredictionResult` per block. Keyed models get one block per key, so each model is asked
for once per block.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Optional

import apache_beam as beam
import numpy as np
import torch
from apache_beam.ml.inference.base import KeyModelMapping, PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from mmkit.core.keyed import FixedBatchKeyedModelHandler

__all__ = [
  "RUNNER",
  "index_ranges",
  "block_inference_fn",
  "BlockModelHandler",
  "BuildBlock",
  "block_handler",
  "keyed_block_handler",
  "OneProcessKeyedModelHandler",
  "RowsOf",
  "KEYED_BLOCKS_PER_BATCH",
]

# Name the runner: `beam.Pipeline()` (the DirectRunner) first tries Beam's Prism runner for a
# pipeline like this one. Online it downloads Prism's binary and runs the pipeline there, a
# different runner; offline the download fails, after 0.11 s a run here and three empty temp
# dirs, before it falls back to this in-process runner (docs/beam_findings.md, finding 14).
RUNNER = "FnApiRunner"

# Blocks per keyed batch: each batch costs one model request per key in it (a round trip to
# Beam's model manager thread), so 32 blocks of 8 keys ask 9 times instead of 64 (measured in
# docs/fast_path.md). 32 blocks of 1024 x 64 float32 rows hold 8 MB.
KEYED_BLOCKS_PER_BATCH = 32


def index_ranges(n: int, block: int = 1024) -> list[tuple[int, int]]:
  """[(0, block), (block, 2*block), ...] covering n rows: what the pipeline moves."""
  if block < 1:
    raise ValueError(f"block must be >= 1, got {block}.")
  return [(start, min(start + block, n)) for start in range(0, n, block)]


def block_inference_fn(
  batch: Any,
  model: torch.nn.Module,
  device: Any,
  inference_args: Optional[dict] = None,
  model_id: Optional[str] = None,
) -> Iterable[PredictionResult]:
  """One forward pass per block; one PredictionResult holding the block's [rows, classes] output."""
  blocks = [batch] if isinstance(batch, torch.Tensor) else list(batch)
  with torch.no_grad():
    return [PredictionResult(block, model(block), model_id) for block in blocks]


@lru_cache(maxsize=4)
def _rows(source: str, n: int, seed: int) -> torch.Tensor:
  # Loaded (or generated) once per worker process, not captured by the DoFn's pickle.
  if source == "random":
    return torch.from_numpy(np.random.default_rng(seed).random((n, 64), dtype=np.float32))
  from mmkit import data

  x = data.cohort(source, "all")[0]
  return torch.tensor(np.resize(x, (n, 64)))


class RowsOf:
  """Where a block's rows come from: a source name and size, resolved inside the worker."""

  def __init__(self, source: str = "random", n: int = 200_000, seed: int = 0):
    self.source, self.n, self.seed = source, n, seed

  def block(self, start: int, stop: int) -> torch.Tensor:
    return _rows(self.source, self.n, self.seed)[start:stop].clone()


class BuildBlock(beam.DoFn):
  """(start, stop) -> tensor block, or (key, (start, stop)) -> (key, block) for keyed models."""

  def __init__(self, rows: RowsOf, keyed: bool = False):
    self._rows, self._keyed = rows, keyed

  def process(self, element):
    if self._keyed:
      key, (start, stop) = element
      yield key, self._rows.block(start, stop)  # RunInference batches these (keyed_block_handler)
    else:
      start, stop = element
      yield self._rows.block(start, stop)


class BlockModelHandler(PytorchModelHandlerTensor):
  """Beam's PyTorch handler for blocks: one forward pass and one result per block.

  Also sizes a batch from tensor shapes: Beam's own `get_num_bytes` visits every number of
  every tensor, which for a 1024 x 64 block costs more than the inference.
  """

  def __init__(self, state_dict_path: str, model_class: type, model_params: Optional[dict] = None):
    super().__init__(
      state_dict_path=state_dict_path,
      model_class=model_class,
      model_params=model_params or {},
      device="CPU",
      inference_fn=block_inference_fn,
    )

  def get_num_bytes(self, batch) -> int:
    blocks = [batch] if isinstance(batch, torch.Tensor) else batch
    return sum(block.numel() * block.element_size() for block in blocks)


def block_handler(
  state_dict_path: str, model_class: type, model_params: Optional[dict] = None
) -> BlockModelHandler:
  """A BlockModelHandler fed whole blocks: RunInference does not re-batch them."""
  return BlockModelHandler(state_dict_path, model_class, model_params).with_no_batching()


class OneProcessKeyedModelHandler(FixedBatchKeyedModelHandler):
  """The kit's keyed handler with Beam's model manager kept in the process that runs inference.

  Beam's KeyedModelHandler shares its model manager across processes (a server thread
  behind a proxy): every batch then asks for each key's model through a round trip to
  that thread, and each run starts by connecting to it. In one process that sharing buys
  nothing; `share_model_across_processes` is the ModelHandler setting Beam reads to decide,
  and with it off Beam keeps the manager in the DoFn's process (loads, LRU, hint, metrics
  unchanged). With several worker processes each process then has its own models.
  """

  def share_model_across_processes(self) -> bool:
    return False


def keyed_block_handler(
  models: dict,
  model_class: type,
  model_params: Optional[dict] = None,
  hint: Optional[int] = None,
  blocks_per_batch: int = KEYED_BLOCKS_PER_BATCH,
  share_across_processes: bool = False,
) -> FixedBatchKeyedModelHandler:
  """Keyed models fed (key, block) elements, `blocks_per_batch` a batch (Beam batches them).

  Beam's KeyedModelHandler asks its model manager for a key's model once per batch, so a
  batch of several blocks per key pays that request once for all of them; the manager stays
  in this process unless `share_across_processes` (Beam's default for keyed models).
  """
  cls = FixedBatchKeyedModelHandler if share_across_processes else OneProcessKeyedModelHandler
  mappings = [
    KeyModelMapping([key], BlockModelHandler(path, model_class, model_params))
    for key, path in models.items()
  ]
  return cls(mappings, max_models_per_worker_hint=hint, batch_size=blocks_per_batch)
