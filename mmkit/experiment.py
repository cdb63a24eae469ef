"""One traced keyed-model run, end to end (04_memory; `python -m mmkit sweep` repeats it)."""

from __future__ import annotations

import time
from typing import Optional

import apache_beam as beam
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from apache_beam.options.pipeline_options import PipelineOptions

from mmkit import data, models
from mmkit.cleanup import clean_up
from mmkit.data import model_keys, source_of
from mmkit.inputs import keyed_examples
from mmkit.keyed import keyed_handler
from mmkit.pipelines import CountElements, KeyedInference, new_pipeline
from mmkit.settings import KeyedRun
from mmkit.simulate import model_accesses, optimal_loads, simulate_lru
from mmkit.tracing import RunReport, Tracer, process_rss_mb
from mmkit.validate import check_state_dict
from mmkit.workers import child_pids, stop_workers_on_interrupt

__all__ = [
  "KeyedRun",
  "model_handlers",
  "keyed_pipeline",
  "run_keyed",
  "predicted_loads",
]


def model_handlers(
  n_models: int, model_mb: Optional[float] = None
) -> dict[str, PytorchModelHandlerTensor]:
  """A PyTorch handler per key: the source's specialist, or a synthetic model of `model_mb` MB."""
  handlers = {}
  for index, key in enumerate(model_keys(n_models)):
    if model_mb is None:
      cls, params = models.model_spec(f"specialist_{source_of(key)}")
      path = models.model_path(f"specialist_{source_of(key)}")
      check_state_dict(str(path), cls, params)
    else:
      cls, params = models.SizedModel, {"megabytes": model_mb}
      path = models.sized_model_path(model_mb, index)
    handlers[key] = PytorchModelHandlerTensor(
      state_dict_path=str(path), model_class=cls, model_params=params, device="CPU"
    )
  return handlers


def keyed_pipeline(
  run: KeyedRun,
  handlers: dict,
  options: Optional[PipelineOptions] = None,
  log_dir: Optional[str] = None,
) -> beam.Pipeline:
  """The keyed pipeline of `run` over `handlers` (traced or not), built but not run."""
  keys = model_keys(run.models)
  examples = keyed_examples(
    data.key_stream(run.stream, keys, run.elements, seed=run.seed), seed=run.seed
  )
  pipeline = new_pipeline(run.runner, options)
  _ = (
    pipeline
    # Keep the stream's order: swaps depend on it. With several worker processes that sends
    # the one bundle to one worker; `spread` reshuffles, so every worker gets some
    # (and the order, hence the simulator's prediction, is lost): docs/runners.md.
    | "Examples" >> beam.Create(examples, reshuffle=run.spread)
    | "Infer"
    >> KeyedInference(keyed_handler(handlers, run.hint, run.batch_size), run.group, log_dir)
    | "CountOut" >> beam.ParDo(CountElements("elements_out", log_dir))
  )
  return pipeline


def run_keyed(run: KeyedRun, options: Optional[PipelineOptions] = None) -> RunReport:
  """Runs the keyed pipeline once under a Tracer; the report carries `run` (`report.run`)."""
  run.validate()
  # Made before tracing: sized models are built once.
  handlers = model_handlers(run.models, run.model_mb)
  tracer, pipeline = Tracer(), None
  children_before = child_pids()
  try:
    with tracer, stop_workers_on_interrupt():
      pipeline = keyed_pipeline(
        run, {k: tracer.wrap(mh, k) for k, mh in handlers.items()}, options, tracer.log_dir
      )
      result = pipeline.run()
      result.wait_until_finish()
      pipeline_end = time.time()
      # Models still resident when the pipeline ends are freed while traced, so their releases
      # count; this process's memory is read at each step (what freeing and malloc_trim give back).
      memory = {"rss_at_end_mb": process_rss_mb(), **clean_up(pipeline, rss=process_rss_mb)}
  except BaseException as error:
    # Interrupted (a reader pressing stop) or failed: the same cleanup, and the worker
    # processes the run started are ended, so the next run in this kernel starts clean.
    clean_up(pipeline, workers_before=children_before)
    tracer.close()
    if isinstance(error, RuntimeError) and "KeyboardInterrupt" in str(error):
      raise KeyboardInterrupt("run interrupted") from error  # Beam wraps the interrupt: unwrap it
    raise
  report = tracer.report(
    result, run=run, **predicted_loads(run), **memory, pipeline_end=pipeline_end
  )
  report.extra["elements_out"] = report.counts.get("elements_out", 0)
  report.extra["dead_letters"] = report.counts.get("dead_letters", 0)
  return report


def predicted_loads(run: KeyedRun) -> dict:
  """What `mmkit.simulate` predicts for this run: Beam's LRU replayed, and Belady's optimum."""
  keys = model_keys(run.models)
  accesses = model_accesses(
    data.key_stream(run.stream, keys, run.elements, seed=run.seed), run.batch_size, group=run.group
  )
  capacity = run.hint if run.hint is not None else len(keys)
  if run.spread:  # a reshuffled stream has no order to replay
    return {"simulated_loads": None, "optimal_loads": None}
  return {
    "simulated_loads": simulate_lru(accesses, run.hint).loads,
    "optimal_loads": optimal_loads(accesses, capacity),
  }
