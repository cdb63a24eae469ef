"""A batch served by the process that holds the model against one served through Beam's proxy.

    python bench/proxied_batches.py [--elements 400] [--hint 8] [--batch-size 8] [--model-mb MB]

Beam 2.77 shares a KeyedModelHandler's model manager across the processes of a machine: the
process that first loads a model holds it, and every other process sends its batches there
through a localhost proxy. This runs the keyed pipeline on the multi-processing DirectRunner
(2 workers) with the elements spread over both (`reshuffle`), times every inference call in
each process, and prints the median milliseconds per batch, local and proxied, per worker.
A hint as big as the number of models keeps swaps out of the comparison.
"""

import argparse
import logging
import statistics

from mmkit.core.cleanup import clean_up
from mmkit.core.tracer import Tracer
from mmkit.experiment import keyed_pipeline, model_handlers
from mmkit.memwatch import MemorySampler
from mmkit.notebook import quiet_worker_processes
from mmkit.pipelines import runner_options
from mmkit.plots import worker_names
from mmkit.report import RunReport
from mmkit.settings import KeyedRun


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--elements", type=int, default=400)
  parser.add_argument("--models", type=int, default=4)
  parser.add_argument("--hint", type=int, default=4)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--model-mb", type=float, default=None)
  args = parser.parse_args()
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  run = KeyedRun(
    models=args.models,
    hint=args.hint,
    elements=args.elements,
    batch_size=args.batch_size,
    model_mb=args.model_mb,
    runner="multiprocess",
    spread=True,
  )
  handlers = model_handlers(run.models, run.model_mb)
  with quiet_worker_processes(), Tracer(sampler=MemorySampler()) as tracer:
    traced = {k: tracer.wrap(mh, k, time_batches=True) for k, mh in handlers.items()}
    result = keyed_pipeline(run, traced, runner_options("multiprocess"), tracer.log_dir).run()
    result.wait_until_finish()
    clean_up()
  report = RunReport.of(tracer, result)
  names = worker_names(report)
  batches = report.batch_frame()
  print(
    f"{run.models} models, hint {run.hint}, {run.elements} elements, batches of {run.batch_size}, "
    f"{report.seconds:.1f} s, effective cap {report.effective_cap}"
  )
  for pid, rows in batches.groupby("pid"):
    for is_proxied, part in rows.groupby("proxied"):
      how = "through the proxy" if is_proxied else "locally"
      print(
        f"{names.get(str(pid), pid)}: {len(part)} batches served {how}, "
        f"median {1000 * statistics.median(part['seconds']):.2f} ms per batch"
      )


if __name__ == "__main__":
  main()
