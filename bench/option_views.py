"""Eight `ib.collect`s in a fresh process, with Beam's options views kept (as the notebooks run).

    python bench/option_views.py [--as-shipped]

`mmkit.notebook.setup()` hands out the view `PipelineOptions.view_as` made first for an options
object (`mmkit.core.beam_private.remember_option_views`, finding 20); `--as-shipped` puts Beam's
own `view_as` back, which parses the flags again for every view. Time the two from outside, in
turn (A B A B ...), so that a drift in the machine's speed falls on both alike; both pay the
same imports.
"""

import argparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.interactive import interactive_beam as ib
from apache_beam.runners.interactive import interactive_environment
from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

from mmkit import notebook


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--as-shipped", action="store_true", help="Beam's own view_as")
  args = parser.parse_args()
  notebook.setup()
  if args.as_shipped:
    PipelineOptions.view_as = PipelineOptions.view_as.plain
  for _ in range(8):
    p = beam.Pipeline(InteractiveRunner())
    out = p | beam.Create(range(64)) | "Double" >> beam.Map(lambda x: 2 * x)
    interactive_environment.current_env().add_user_pipeline(p)  # as a notebook's globals are
    ib.collect(out | "Next" >> beam.Map(lambda x: x + 1), raw_records=True)


if __name__ == "__main__":
  main()
