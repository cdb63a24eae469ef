"""What one `ib.collect` costs before its first element, and where it goes (the notebooks' floor).

    python bench/interactive_overhead.py [--runs 5]

A two-step pipeline over 64 numbers (`Create | Map | Map`), collected with `ib.collect` on the
InteractiveRunner and run on the in-process FnApiRunner, each `--runs` times after a warm-up:
the medians, then one profiled collect: how many times Beam turned the pipeline into its proto
(`Pipeline.to_runner_api`) and the share of the collect spent in
`apache_beam.transforms.userstate.get_dofn_specs`, which inspects the signature of every method
of every DoFn each time. Last, the collect's median again with those answers kept per DoFn
(`mmkit.core.beam_private.remember_dofn_specs`: finding 20), then with each function's
arguments kept too (`remember_function_arguments`), then with each options view kept
(`remember_option_views`): all three are what `mmkit.notebook.setup()` does. Run as a script: a
notebook's kernel adds the PCollections held in its variables (each
cached), so a collect there costs more.
"""

import argparse
import cProfile
import pstats
import statistics
import time

import apache_beam as beam
from apache_beam.runners.interactive import interactive_beam as ib
from apache_beam.runners.interactive import interactive_environment
from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

from mmkit.core.beam_private import (
  quiet_dot_lookup,
  remember_dofn_specs,
  remember_function_arguments,
  remember_option_views,
)
from mmkit.notebook import quiet_logging


def build(runner):
  p = beam.Pipeline(runner)
  out = p | beam.Create(range(64)) | "Double" >> beam.Map(lambda x: 2 * x)
  return p, out | "Next" >> beam.Map(lambda x: x + 1)


def collect_seconds() -> float:
  p, out = build(InteractiveRunner())
  interactive_environment.current_env().add_user_pipeline(p)  # as a notebook's globals are
  start = time.perf_counter()
  ib.collect(out, raw_records=True)
  return time.perf_counter() - start


def fn_api_seconds() -> float:
  p, _ = build("FnApiRunner")
  start = time.perf_counter()
  p.run().wait_until_finish()
  return time.perf_counter() - start


def profiled_collect() -> tuple[int, float, float]:
  """(translations to the proto, seconds in get_dofn_specs, seconds in all) of one collect."""
  import inspect

  from apache_beam.transforms import userstate

  def where(function) -> tuple[str, int, str]:
    return inspect.getsourcefile(function), inspect.getsourcelines(function)[1], function.__name__

  profile = cProfile.Profile()
  profile.enable()
  collect_seconds()
  profile.disable()
  stats = pstats.Stats(
    profile
  ).stats  # {(file, line, name): (primitive calls, calls, own, cumulative, callers)}
  translations = stats.get(where(beam.Pipeline.to_runner_api), (0,))[0]
  specs = stats.get(where(userstate.get_dofn_specs), (0, 0, 0, 0.0))[3]  # Beam's own
  return translations, specs, stats[where(collect_seconds)][3]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", type=int, default=5)
  args = parser.parse_args()
  quiet_logging()  # not setup(): that would keep the DoFn specs before Beam is measured
  quiet_dot_lookup()
  collect_seconds(), fn_api_seconds()  # warm-up: the first run in a process pays one-off costs
  collect = statistics.median(collect_seconds() for _ in range(args.runs))
  fn_api = statistics.median(fn_api_seconds() for _ in range(args.runs))
  translations, specs, total = profiled_collect()
  print(
    f"ib.collect of Create | Map | Map over 64 numbers: {collect:.2f} s (median of {args.runs})"
  )
  print(f"the same pipeline on the FnApiRunner:            {fn_api:.2f} s")
  print(
    f"one profiled collect: {translations} translations to the pipeline proto, "
    f"{specs:.2f} s of {total:.2f} s ({specs / total:.0%}) in get_dofn_specs"
  )
  remember_dofn_specs()
  remembered = statistics.median(collect_seconds() for _ in range(args.runs))
  print(f"ib.collect with each DoFn's specs kept:          {remembered:.2f} s")
  remember_function_arguments()
  both = statistics.median(collect_seconds() for _ in range(args.runs))
  print(f"... and each function's arguments kept too:      {both:.2f} s")
  remember_option_views()
  views = statistics.median(collect_seconds() for _ in range(args.runs))
  print(f"... and each options view kept too:              {views:.2f} s")


if __name__ == "__main__":
  main()
