"""A thrashing run with and without stopping evicted models' proxy servers.

    python bench/evicted_servers.py [--loads 200 800 1600]

Beam 2.77 starts a proxy server (two threads) for every keyed model it loads and never stops
it; each server's thread wakes every second, so the run slows down as servers pile up. The
kit's keyed handler stops an evicted model's server once the model is freed
(`mmkit.core.keyed.ObservedModelManager`). Same pipeline, 4 shipped models, hint 1, a round-robin
stream in batches of one (a load per element), in-process DirectRunner; prints seconds, ms
per load and the threads alive at the end of each run.
"""

import argparse
import logging
import threading
import time

import apache_beam as beam
from apache_beam.ml.inference.base import KeyModelMapping

from mmkit import data
from mmkit.core.cleanup import clean_up
from mmkit.core.keyed import FixedBatchKeyedModelHandler
from mmkit.data import model_keys
from mmkit.experiment import model_handlers
from mmkit.inputs import keyed_examples
from mmkit.pipelines import KeyedInference, new_pipeline
from mmkit.settings import KeyedRun


def run_once(loads: int, stop_servers: bool) -> tuple[float, int]:
  run = KeyedRun(models=4, hint=1, elements=loads, stream="cycle", batch_size=1)
  handlers = model_handlers(run.models)
  handler = FixedBatchKeyedModelHandler(
    [KeyModelMapping([k], mh) for k, mh in handlers.items()],
    max_models_per_worker_hint=1,
    batch_size=1,
    stop_evicted_servers=stop_servers,
  )
  examples = keyed_examples(data.key_stream(run.stream, model_keys(run.models), run.elements))
  pipeline = new_pipeline("direct")
  _ = pipeline | beam.Create(examples, reshuffle=False) | KeyedInference(handler)
  start = time.perf_counter()
  pipeline.run().wait_until_finish()
  seconds, threads = time.perf_counter() - start, threading.active_count()
  clean_up()
  return seconds, threads


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--loads", type=int, nargs="+", default=[200, 800, 1600])
  args = parser.parse_args()
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  run_once(50, True)  # warm-up
  for loads in args.loads:
    for stop in (False, True):
      seconds, threads = run_once(loads, stop)
      who = "kit (stops evicted servers)" if stop else "Beam as is"
      print(
        f"{loads} loads, {who}: {seconds:.2f} s, {1000 * seconds / loads:.1f} ms per load, "
        f"{threads} threads at the end",
        flush=True,
      )


if __name__ == "__main__":
  main()
