"""Loads of the same thrashing pipeline, run after run: Beam sizes its batches (05, finding 15).

    python bench/adaptive_batching.py [--runs 8] [--runner interactive|fnapi]

Notebook 05's pipeline as it comes: a round-robin (cycle) stream of 256 elements over 8 keys,
one 32 MB model each, `max_models_per_worker_hint=2`, no grouping, every handler asking for
batches of 32 (`min_batch_size=max_batch_size=32`). A `KeyedModelHandler` with several models
drops those sizes (finding 15), so Beam's `BatchElements` sizes the batches from its own timings,
and the loads of one run depend on how its first batches went. After a one-element warm-up (the
first load in a process pays one-off costs), each run prints its loads and its median batch per
key. Batches of exactly 32 (notebook 05's `FixedBatchKeyedHandler`) would load what Beam's LRU
replayed on them gives (`mmkit.core.simulate`), printed beside them.
"""

import argparse
import statistics
import time

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, KeyModelMapping, RunInference
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

from mmkit import data, models
from mmkit.core.cleanup import release_resident_models
from mmkit.core.simulate import model_accesses, simulate_lru
from mmkit.core.tracer import Tracer
from mmkit.data import model_keys
from mmkit.inputs import ToKeyedTensor, keyed_examples
from mmkit.memwatch import MemorySampler
from mmkit.notebook import setup
from mmkit.report import RunReport

MB, HINT, BATCH = 32, 2, 32


def run_once(examples, keys, runner: str) -> tuple[int, float, float]:
  """(loads, median timed batch per key, seconds) of one run of the pipeline."""
  from apache_beam.runners.interactive import interactive_beam as ib
  from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

  with Tracer(sampler=MemorySampler()) as tracer:
    mappings = [
      KeyModelMapping(
        [key],
        tracer.wrap(
          PytorchModelHandlerTensor(
            state_dict_path=str(models.sized_model_path(MB, i)),
            model_class=models.SizedModel,
            model_params={"megabytes": MB},
            device="CPU",
            min_batch_size=BATCH,
            max_batch_size=BATCH,
          ),
          key,
          time_batches=True,
        ),
      )
      for i, key in enumerate(keys)
    ]
    handler = KeyedModelHandler(mappings, max_models_per_worker_hint=HINT)
    p = beam.Pipeline(InteractiveRunner() if runner == "interactive" else "FnApiRunner")
    out = p | beam.Create(examples) | beam.ParDo(ToKeyedTensor()) | RunInference(handler)
    start = time.perf_counter()
    if runner == "interactive":
      ib.collect(out, raw_records=True)
    else:
      p.run().wait_until_finish()
    seconds = time.perf_counter() - start
    release_resident_models()
  report = RunReport.of(tracer)
  sizes = report.batch_frame()["size"]
  return report.loads, float(sizes.median()) if len(sizes) else 0.0, seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", type=int, default=8)
  parser.add_argument("--runner", choices=("interactive", "fnapi"), default="interactive")
  args = parser.parse_args()
  setup()
  keys = model_keys(8)
  stream = data.key_stream("cycle", keys, 256)
  examples = keyed_examples(stream)
  fixed = simulate_lru(model_accesses(stream, BATCH), HINT).loads
  run_once(examples[:1], keys, args.runner)  # warm-up
  loads = []
  for i in range(args.runs):
    n, size, seconds = run_once(examples, keys, args.runner)
    loads.append(n)
    print(f"run {i + 1}: {n:3d} loads, median batch per key {size:4.1f}, {seconds:.1f} s")
  print(
    f"{args.runs} runs on the {args.runner} runner: loads {sorted(loads)}, median "
    f"{statistics.median(loads):g} (batches of exactly {BATCH}: {fixed}, Beam's LRU replayed)"
  )


if __name__ == "__main__":
  main()
