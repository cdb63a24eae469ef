"""Pipeline pieces shared by the notebooks and the CLI (taught in 03_keyed_models, 04_memory).

Every builder takes ordinary Beam `PipelineOptions`, so the same code runs on the
InteractiveRunner in a notebook, on the DirectRunner from the CLI, or on a cluster.
The elements they take are made by `mmkit.inputs`.
"""

from __future__ import annotations

from typing import Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from mmkit.inputs import ToKeyedTensorOrPass
from mmkit.settings import GROUPINGS

__all__ = [
  "runner_options",
  "new_pipeline",
  "CountElements",
  "KeyedInference",
  "keyed_inference_with_dead_letters",
]


def runner_options(runner: str = "direct", workers: int = 2, **extra) -> PipelineOptions:
  """Options for the DirectRunner: `direct` in this process, `multiprocess` in `workers`."""
  if runner == "direct":
    flags = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
  elif runner == "multiprocess":
    # Worker processes log every bundle at INFO to the parent's stderr. Their errors reach
    # this process as the run's own error; logged by the worker too, they would only repeat
    # it (or, when another worker dies, report its broken connection: mmkit.workers).
    flags = {
      "direct_num_workers": workers,
      "direct_running_mode": "multi_processing",
      "default_sdk_harness_log_level": "CRITICAL",
    }
  else:
    raise ValueError(f"unknown runner {runner!r}: use one of direct, multiprocess.")
  return PipelineOptions(runner="DirectRunner", **flags, **extra)


def new_pipeline(
  runner: str = "direct", options: Optional[PipelineOptions] = None
) -> beam.Pipeline:
  """A pipeline on `runner` (`interactive`: Beam's InteractiveRunner, as in the notebooks)."""
  if runner == "interactive":
    from apache_beam.runners.interactive import interactive_environment
    from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

    pipeline = beam.Pipeline(InteractiveRunner(), options=options)
    # The InteractiveRunner runs only pipelines it tracks; a notebook's globals are tracked
    # for it, a pipeline made inside a function must be added (and evicted after the run).
    interactive_environment.current_env().add_user_pipeline(pipeline)
    return pipeline
  return beam.Pipeline(options=options or runner_options(runner))


class CountElements(beam.DoFn):
  """Passes elements through, counting them in a Beam counter `mmkit/<name>`.

  With a tracer's `log_dir` it also writes its count there at the end of each bundle, so
  runners without metrics (the InteractiveRunner) are counted too (`RunReport.counts`).
  """

  def __init__(self, name: str, log_dir: Optional[str] = None):
    self._name = name
    self._log_dir = log_dir
    self._counter = beam.metrics.Metrics.counter("mmkit", name)

  def start_bundle(self):
    self._seen = 0

  def process(self, element):
    self._counter.inc()
    self._seen += 1
    yield element

  def finish_bundle(self):
    if self._log_dir and self._seen:
      from mmkit.core.tracer import record_count

      record_count(self._log_dir, self._name, self._seen)


def _ungroup(key_values):
  key, values = key_values
  return [(key, value) for value in values]


def keyed_inference_with_dead_letters(
  examples: beam.PCollection, handler, group: str = "none", log_dir: Optional[str] = None
):
  """(key, index or tensor) -> ((key, PredictionResult), DeadLetters), through a keyed `handler`.

  `group` decides what reaches the model manager together: `none`, the stream as it comes;
  `gbk`, a GroupByKey first, so one key's elements arrive together; `batches`,
  GroupIntoBatches per key, so every batch holds one key and is served by one model.
  Elements with no model for their key, a tensor of the wrong shape, or a tensor the model
  refuses (raises on) become DeadLetters (counted as `dead_letters` in a traced run) and the
  rest are served, batch-mates of a refused element included (see `InferOrDeadLetter`).
  """
  from mmkit.core.keyed import DEAD_LETTERS, InferOrDeadLetter, RouteByModel

  if group not in GROUPINGS:
    raise ValueError(f"unknown group {group!r}: use one of {', '.join(GROUPINGS)}.")
  keys = handler.keys
  by_key = examples | "RouteByKey" >> beam.ParDo(RouteByModel(keys)).with_outputs(
    DEAD_LETTERS, main="ok"
  )
  tensors = by_key.ok | "ToTensor" >> beam.ParDo(ToKeyedTensorOrPass())
  by_shape = tensors | "RouteByShape" >> beam.ParDo(RouteByModel(keys, (64,))).with_outputs(
    DEAD_LETTERS, main="ok"
  )
  tensors = by_shape.ok
  if group == "gbk":
    tensors = tensors | "GroupByKey" >> beam.GroupByKey() | "Ungroup" >> beam.FlatMap(_ungroup)
  elif group == "batches":
    batch_size = getattr(handler, "batch_size", None) or 32
    tensors = (
      tensors
      | "GroupIntoBatches" >> beam.GroupIntoBatches(batch_size)
      | "ToBatch" >> beam.Map(_ungroup)
    )
  infer = InferOrDeadLetter(handler.prebatched() if group == "batches" else handler)
  predictions, refused = tensors | "Serve" >> infer
  dead = (
    (by_key[DEAD_LETTERS], by_shape[DEAD_LETTERS], refused)
    | "DeadLetters" >> beam.Flatten()
    | "CountDead" >> beam.ParDo(CountElements(DEAD_LETTERS, log_dir))
  )
  return predictions, dead


@beam.ptransform_fn
def KeyedInference(
  examples: beam.PCollection, handler, group: str = "none", log_dir: Optional[str] = None
) -> beam.PCollection:
  """`keyed_inference_with_dead_letters`, predictions only (dead letters are still counted)."""
  predictions, _ = keyed_inference_with_dead_letters(examples, handler, group, log_dir)
  return predictions
