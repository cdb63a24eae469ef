"""Freeing what a Beam run leaves behind in this process, in one place (04_memory).

Copy this file with `beam_private.py` into a project (standard library and Beam only).

Beam 2.77 keeps every keyed model it loaded resident after the pipeline ends, starts a proxy
server (two threads and a socket) per model load that nothing stops, leaves rendezvous files
in the temp dir, and the InteractiveRunner leaves a few `beam-pipeline-temp*` dirs per run;
glibc keeps freed heap pages. `clean_up` frees all of it; `mmkit.experiment.run_keyed` calls it
on every path (normal end, failure, interrupt), and ends the worker processes an interrupted
run left (`mmkit.workers`). The helpers below are its steps, for code that runs its own
pipelines.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

try:
  from mmkit.core import beam_private
except ImportError:  # copied into a project beside beam_private.py
  import beam_private

__all__ = [
  "clean_up",
  "release_resident_models",
  "return_freed_memory",
  "forget_interactive_pipeline",
]


def clean_up(
  pipeline: Any = None,
  rss: Optional[Callable[[], float]] = None,
) -> dict[str, float]:
  """Frees what a run left in this process: its models, their servers and files, heap memory.

  `pipeline`: an InteractiveRunner pipeline is forgotten too (its temp dirs removed).
  `rss`: reads this process's memory (MB); returns it after the models are freed and after
  the heap is trimmed, as `rss_after_free_mb` and `rss_after_trim_mb`.
  """
  memory = {}
  release_resident_models(trim=False)
  if rss is not None:
    memory["rss_after_free_mb"] = rss()
  return_freed_memory()
  if rss is not None:
    memory["rss_after_trim_mb"] = rss()
  if pipeline is not None and type(pipeline.runner).__name__ == "InteractiveRunner":
    forget_interactive_pipeline(pipeline)
  return memory


def forget_interactive_pipeline(pipeline: Any) -> None:
  """Undoes `new_pipeline("interactive")` after a run: untracks it, drops its cache and temp dirs.

  Evicting alone leaves the `beam-pipeline-temp*` dirs of the pipeline and of the pipelines
  the InteractiveRunner derived from it (Beam 2.77 removes them only when the whole
  environment is cleared), so a notebook re-running a pipeline leaves a few dirs per run.
  """
  import shutil

  from apache_beam.runners.interactive import interactive_environment

  env = interactive_environment.current_env()
  # No public way lists a user pipeline's derived pipelines; without it only its own dir goes.
  derived = beam_private.derived_pipelines(env, pipeline)
  env.cleanup(pipeline)
  env.evict_tracked_pipelines(pipeline)
  for each in (pipeline, *derived):
    shutil.rmtree(each.local_tempdir, ignore_errors=True)


def release_resident_models(trim: bool = True) -> int:
  """Frees what Beam's keyed models leave in this process after a run; returns how many models.

  Beam's keyed model manager keeps each loaded model in a process-wide registry of
  `MultiProcessShared` singletons, and starts a proxy server (two threads and a listening
  socket) for every model it loads, evicted ones included. When the pipeline ends nothing
  stops them: in a notebook every run leaves its resident models behind, and a thrashing
  run leaves thousands of threads. This frees the models, stops their servers and removes
  the rendezvous files Beam wrote in the temp dir; `trim` then hands freed heap memory back
  to the system (`return_freed_memory`).
  """
  entries = beam_private.shared_entries()
  freed = 0
  # A run stopped mid-load: the load goes on in a proxy server's handler thread (Beam serves
  # the keyed manager through one) and registers its model after the first sweep; retiring
  # the servers joins those threads, so a second sweep finds it (measured: 1 stop in 25).
  for _ in range(3):
    tags = [tag for tag in list(entries) if beam_private.is_run_tag(tag)]
    if not tags:
      break
    freed += sum(1 for tag in tags if len(tag) == 32 and beam_private.is_loaded(entries[tag]))
    beam_private.retire_models(tags, force=True)
  beam_private.remove_stale_rendezvous_files()  # those of dead worker processes' servers
  if trim:
    return_freed_memory()
  return freed


def return_freed_memory() -> bool:
  """Asks glibc to hand freed heap memory back to the system (`malloc_trim`); False elsewhere.

  Freed models do not always lower the resident memory: the allocator keeps freed pages for
  reuse. Measured here: about 130 MB kept after a thrashing run of 16 MB models, returned by this.
  """
  import ctypes
  import gc

  gc.collect()
  try:
    return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
  except (OSError, AttributeError):
    return False


def _example() -> dict:
  """A keyed run leaves its two models resident after the pipeline ends; they are freed here."""
  import os
  import tempfile
  import threading

  import apache_beam as beam
  import torch
  from apache_beam.ml.inference.base import KeyedModelHandler, KeyModelMapping, RunInference
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
  from apache_beam.options.pipeline_options import PipelineOptions

  folder = tempfile.mkdtemp(prefix="cleanup-example-")
  mappings = []
  for key in "ab":
    path = os.path.join(folder, f"{key}.pt")
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    params = {"in_features": 4, "out_features": 2}
    handler = PytorchModelHandlerTensor(path, torch.nn.Linear, params, device="CPU")
    mappings.append(KeyModelMapping([key], handler))
  threads_before = threading.active_count()
  with beam.Pipeline(options=PipelineOptions(runner="DirectRunner")) as pipeline:
    _ = (
      pipeline
      | beam.Create([(key, torch.ones(4)) for key in "abab"], reshuffle=False)
      | RunInference(KeyedModelHandler(mappings))
    )
  threads_after_run = threading.active_count()
  freed = release_resident_models()
  return {
    "freed": freed,
    "threads_left_by_the_run": threads_after_run - threads_before,
    "threads_left_after_cleanup": threading.active_count() - threads_before,
  }


if __name__ == "__main__":
  import json

  print(json.dumps(_example()))
