"""One traced keyed-model run, end to end (04_memory; `python -m mmkit sweep` repeats it)."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Callable, Optional

import apache_beam as beam
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from apache_beam.options.pipeline_options import PipelineOptions

from mmkit import models
from mmkit.core.beam_private import tcp_nodelay
from mmkit.core.cleanup import clean_up
from mmkit.core.keyed import keyed_handler
from mmkit.core.mmap_load import MmapPytorchModelHandlerTensor
from mmkit.core.simulate import (
  batch_accesses,
  model_accesses,
  optimal_loads,
  simulate_lru,
  stream_batches,
)
from mmkit.core.tracer import Tracer, process_rss_mb
from mmkit.data import model_keys, source_of
from mmkit.faults import (
  MEMORY_LIMIT_MECHANISM,
  memory_limit_error,
  model_file_error,
  worker_died_error,
)
from mmkit.inputs import keyed_examples
from mmkit.memwatch import MemorySampler
from mmkit.patterns import shipped_handler
from mmkit.pipelines import CountElements, KeyedInference, new_pipeline
from mmkit.report import RunReport
from mmkit.settings import STREAM_TICK_SECONDS, KeyedRun
from mmkit.streaming import (
  event_times,
  latency_summary,
  open_window_elements,
  replay_stream,
  streaming_options,
  windowed,
)
from mmkit.workers import child_pids, stop_worker_processes, stop_workers_on_interrupt

__all__ = [
  "model_handlers",
  "keyed_pipeline",
  "run_keyed",
  "predicted_loads",
]


def model_handlers(
  n_models: int, model_mb: Optional[float] = None, load: str = "copy"
) -> dict[str, PytorchModelHandlerTensor]:
  """A PyTorch handler per key: the source's specialist, or a synthetic model of `model_mb` MB.

  `load="mmap"`: the kit's handler that maps the file instead of copying it
  (`mmkit.core.mmap_load`).
  """
  handler_class = MmapPytorchModelHandlerTensor if load == "mmap" else PytorchModelHandlerTensor
  handlers = {}
  for index, key in enumerate(model_keys(n_models)):
    if model_mb is None:
      handlers[key] = shipped_handler(f"specialist_{source_of(key)}", handler_class)
    else:
      handlers[key] = handler_class(
        state_dict_path=str(models.sized_model_path(model_mb, index)),
        model_class=models.SizedModel,
        model_params={"megabytes": model_mb},
        device="CPU",
      )
  return handlers


def keyed_pipeline(
  run: KeyedRun,
  handlers: dict,
  options: Optional[PipelineOptions] = None,
  log_dir: Optional[str] = None,
  pipeline: Optional[beam.Pipeline] = None,
) -> beam.Pipeline:
  """The keyed pipeline of `run` over `handlers` (traced or not), built but not run.

  Built into `pipeline` if given (else a new one on `run.runner`)."""
  examples = keyed_examples(run.key_stream(), seed=run.seed)
  if pipeline is None:
    pipeline = new_pipeline(run.runner, options or (streaming_options() if run.window else None))
  if run.window is None:
    # Keep the stream's order: swaps depend on it. With several worker processes that sends
    # the one bundle to one worker; `spread` reshuffles, so every worker gets some
    # (and the order, hence the simulator's prediction, is lost): docs/runners.md.
    source = pipeline | "Examples" >> beam.Create(examples, reshuffle=run.spread)
  else:
    source = pipeline | "Events" >> replay_stream(
      examples, event_times(run.elements, seed=run.seed)
    )
    if run.window:
      source = source | "Windowed" >> windowed(run.window)
  _ = (
    source
    | "Infer"
    >> KeyedInference(keyed_handler(handlers, run.hint, run.batch_size), run.group, log_dir)
    | "CountOut" >> beam.ParDo(CountElements("elements_out", log_dir))
  )
  return pipeline


def run_keyed(
  run: KeyedRun,
  options: Optional[PipelineOptions] = None,
  on_event: Optional[Callable[[dict], None]] = None,
) -> RunReport:
  """Runs the keyed pipeline once under a Tracer; the report carries `run` (`report.run`).

  A run that fails part-way raises `mmkit.faults.RunFailed` (its memory limit passed:
  `MemoryLimitExceeded`; a worker process killed: `WorkerDied`; a model file that failed to
  load: `ModelFileFailed`, its elements dead letters) with the report traced until then as
  `error.report`. Beam's shared-model connections this process opens send at once
  (`mmkit.core.beam_private.tcp_nodelay`): the same loads, evictions and memory without 40 ms
  waits. `on_event` sees each event this process traces as it happens (the explorer's progress).
  """
  if run.memory_limit_mb is not None and threading.current_thread() is not threading.main_thread():
    raise ValueError(
      "memory_limit_mb needs the run in the main thread (its watchdog ends the run with SIGINT, "
      "which only the main thread takes): run it there, or without a limit."
    )
  # Made before tracing: sized models are built once.
  handlers = model_handlers(run.models, run.model_mb, run.load)
  sampler = MemorySampler(limit_mb=run.memory_limit_mb)
  tracer, pipeline, stop = Tracer(sampler=sampler, on_event=on_event), None, None
  children_before = child_pids()
  try:
    with tcp_nodelay(), tracer, stop_workers_on_interrupt() as stop:
      # Made first, so a run stopped while its pipeline is built still removes its temp dir.
      if options is None and run.window is not None:
        options = streaming_options()
      pipeline = new_pipeline(run.runner, options)
      keyed_pipeline(
        run,
        {k: tracer.wrap(mh, k) for k, mh in handlers.items()},
        options,
        tracer.log_dir,
        pipeline,
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
    clean_up(pipeline)
    stop_worker_processes(exclude=children_before)
    if pipeline is not None and run.runner != "interactive":  # Beam removes it after a run only
      shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
    partial = _report(tracer, None, run, error=f"{type(error).__name__}: {error}")
    if sampler.limit_reached is not None:  # the watchdog's SIGINT, whatever Beam made of it
      raise memory_limit_error(partial, sampler.limit_reached) from None
    if stop is not None and stop.deaths:  # a worker died: Beam would have waited for it forever
      raise worker_died_error(partial, stop.deaths[0]) from None
    if isinstance(error, RuntimeError) and "KeyboardInterrupt" in str(error):
      interrupted = KeyboardInterrupt("run interrupted")  # Beam wraps the interrupt: unwrap it
      interrupted.report = partial
      raise interrupted from error
    error.report = partial  # what was traced until then
    raise
  report = _report(tracer, result, run, **memory, pipeline_end=pipeline_end)
  if report.load_failures():  # their elements are dead letters: the run says what was lost
    raise model_file_error(report)
  return report


def _report(
  tracer: Tracer, result, run: KeyedRun, error: Optional[str] = None, **figures
) -> RunReport:
  """The run's RunReport: the run, predictions and counts; `error` None: finished."""
  if run.memory_limit_mb is not None:
    figures["memory_limit_by"] = MEMORY_LIMIT_MECHANISM
  if run.window is not None:  # what the windows cost: exact, from the event times
    times = event_times(run.elements, seed=run.seed)
    figures.update(latency_summary(times, run.window))
    figures["open_window_elements"] = open_window_elements(times, run.window)
  return RunReport.of(tracer, result, run, error=error, **predicted_loads(run), **figures)


def predicted_loads(run: KeyedRun) -> dict:
  """What `mmkit.core.simulate` predicts for this run: Beam's LRU replayed, and Belady's optimum."""
  stream = run.key_stream()
  if run.window is None:
    accesses = model_accesses(stream, run.batch_size, group=run.group)
  else:  # the batches a stream delivered a tick at a time makes, windowed or not
    events = list(zip(stream, event_times(run.elements, seed=run.seed)))
    batches = stream_batches(events, run.batch_size, run.window or None, STREAM_TICK_SECONDS)
    accesses = batch_accesses(batches)
  capacity = run.hint if run.hint is not None else run.models
  if run.spread:  # a reshuffled stream has no order to replay
    return {"simulated_loads": None, "optimal_loads": None}
  return {
    "simulated_loads": simulate_lru(accesses, run.hint).loads,
    "optimal_loads": optimal_loads(accesses, capacity),
  }
