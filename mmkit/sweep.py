"""The main job: run the keyed pipeline once per hint (`python -m mmkit sweep`; 04_memory).

Prints a table (or `--json`: one object per run) of loads, Beam's own load count,
releases, peak memory and time; `--out DIR` also writes `sweep.csv`, `sweep.png` (loads
and memory against the hint) and `timeline.png` (memory over one run, loads and releases marked).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import fields, replace
from typing import Optional, Sequence

from mmkit.settings import KeyedRun

__all__ = [
  "COLUMNS",
  "STREAM_COLUMNS",
  "DEFAULT",
  "sweep_reports",
  "sweep",
  "format_table",
  "write_outputs",
  "grouped_loads",
  "run_command",
  "add_parser",
]

COLUMNS = [
  "hint",
  "group",
  "load",
  "models",
  "elements",
  "elements_out",
  "loads",
  "beam_loads",
  "simulated_loads",
  "optimal_loads",
  "releases",
  "load_ms",
  "peak_rss_mb",
  "seconds",
  "window",
  "latency_median_s",
  "latency_p99_s",
  "open_window_elements",
]
# Shown only where a run had them (streaming runs: `--window`).
STREAM_COLUMNS = ("window", "latency_median_s", "latency_p99_s", "open_window_elements")

DEFAULT = KeyedRun()  # the sweep's defaults are a run's (its hints are its own)
_MANY = ("hint", "window")  # the settings a sweep takes several of, one run each


def sweep_reports(
  run: KeyedRun = DEFAULT,
  hints: Sequence[Optional[int]] = (1, 2, 4, 8),
  windows: Sequence[Optional[float]] = (None,),
  progress: bool = True,
  isolate: bool = True,
) -> list:
  """`run` once per hint (and per window of `windows`); returns their RunReports.

  `windows`: None, the batch pipeline; a number, a stream (0: served as it comes; w > 0:
  windows of w seconds and a GroupByKey before inference: `mmkit.streaming`).

  `isolate` runs each hint in a fresh process, so peak memory compares like with like.
  A run that fails (`mmkit.faults.RunFailed`: its `memory_limit_mb` passed, say) gives the
  report traced until then, its `error` saying why, and the sweep goes on.
  """
  from tqdm.auto import tqdm

  from mmkit.experiment import run_keyed
  from mmkit.faults import RunFailed

  runs = [replace(run, hint=hint, window=window) for window in windows for hint in hints]
  reports = []
  bar = tqdm(runs, desc="sweep", unit="run", disable=not progress, file=sys.stderr)
  for run in bar:
    bar.set_postfix_str(
      f"hint={run.hint}" + (f" window={run.window:g}" if run.window is not None else "")
    )
    try:
      reports.append(_run_in_fresh_process(run) if isolate else run_keyed(run))
    except RunFailed as failure:
      reports.append(failure.report or _empty_report(run, str(failure)))
  return reports


def sweep(*args, **kwargs) -> list[dict]:
  """`sweep_reports` as plain dicts, one per hint: the `--json` objects (taught in 04_memory)."""
  return [report.summary() for report in sweep_reports(*args, **kwargs)]


def _run_in_fresh_process(run):
  """Runs one keyed run in a new process, so no run measures memory or threads another left.

  Beam keeps a server thread (and its memory) for every model ever loaded in a process, so
  runs made one after another in the same process start from a higher baseline each time.
  """
  import multiprocessing
  from concurrent.futures import ProcessPoolExecutor
  from concurrent.futures.process import BrokenProcessPool

  from mmkit.experiment import run_keyed
  from mmkit.faults import RunFailed, exit_cause
  from mmkit.notebook import quiet_logging

  class Spawn(multiprocessing.context.SpawnContext):
    """The spawn context, keeping the processes it makes: to read how one ended."""

    processes: list = []

    def Process(self, *args, **kwargs):  # noqa: N802 (multiprocessing's name)
      process = super().Process(*args, **kwargs)
      self.processes.append(process)
      return process

  spawn = Spawn()
  spawn.processes = []
  with ProcessPoolExecutor(max_workers=1, mp_context=spawn, initializer=quiet_logging) as pool:
    future = pool.submit(run_keyed, run)
    try:
      return future.result()
    except BrokenProcessPool:
      for process in spawn.processes:
        process.join(timeout=5)
      # Unknown (None) when the process was reaped before it could be read: seen after an
      # earlier sweep in the same process.
      codes = [p.exitcode for p in spawn.processes if p.exitcode]
      message = (
        f"the run's own process {exit_cause(codes[0] if codes else None)}; "
        "nothing it traced could be read"
      )
      raise RunFailed(message, _empty_report(run, message)) from None


def _empty_report(run, error: str):
  """A report holding only the run's settings and its error: the row of a run that left no trace."""
  from mmkit.experiment import predicted_loads
  from mmkit.report import RunReport

  now = time.time()
  return RunReport([], [], now, now, None, run, error=error, **predicted_loads(run))


def format_table(rows: list[dict]) -> str:
  """The sweep's rows as an aligned text table."""
  import pandas as pd

  frame = pd.DataFrame(rows)
  shown = [c for c in COLUMNS if c in frame and (c not in STREAM_COLUMNS or frame[c].notna().any())]
  table = frame[shown].to_string(index=False)
  failed = [f"hint {r['hint']} failed: {r['error']}" for r in rows if r.get("error")]
  return "\n".join([table, *failed])


def write_outputs(reports: list, out_dir: str) -> list[str]:
  """Writes sweep.csv, sweep.png (loads, memory per hint), timeline.png (one run) to `out_dir`.

  timeline.png: the first run that swaps, whole and zoomed (`plots.timeline_with_zoom_figure`).
  """
  import pandas as pd

  from mmkit import plots

  os.makedirs(out_dir, exist_ok=True)
  rows = [r.summary() for r in reports]
  paths = [os.path.join(out_dir, name) for name in ("sweep.csv", "sweep.png", "timeline.png")]
  frame = pd.DataFrame(rows)
  for column in ("loads_by_key", "workers"):
    if column in frame:
      frame[column] = frame[column].map(json.dumps)
  frame.drop(columns=[c for c in ("releases_by_key",) if c in frame]).to_csv(paths[0], index=False)
  plots.sweep_figure(rows, grouped_loads(reports)).savefig(paths[1], dpi=100, bbox_inches="tight")
  # The timeline of the first run that swaps: the one worth looking at. Its swaps draw as a
  # band, so a zoom shows some one by one; under it, what its memory above the start holds.
  swapping = [r for r in reports if r.loads > r.run.models] or reports
  figure = plots.timeline_with_zoom_figure(swapping[0])
  figure.savefig(paths[2], dpi=100, bbox_inches="tight")
  return paths


def grouped_loads(reports: list) -> list[int]:
  """Loads each run would need with a GroupByKey before inference (simulated)."""
  from mmkit.experiment import predicted_loads

  return [predicted_loads(replace(r.run, group="gbk"))["simulated_loads"] for r in reports]


class _OneLineErrors(argparse.ArgumentParser):
  """argparse that reports a bad argument in one line and exits with status 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _runs(args) -> tuple[Optional[KeyedRun], Optional[str]]:
  """The sweep's run (its first hint and window) and None, or None and the first problem any of
  its runs has, naming the flags."""
  settings = {f.name: getattr(args, f.name) for f in fields(KeyedRun) if f.name not in _MANY}
  try:
    runs = [
      KeyedRun.from_flags(hint=hint, window=window, **settings)
      for window in args.window or [None]
      for hint in args.hints
    ]
  except ValueError as problem:
    return None, str(problem)
  return runs[0], None


def _unwritable(out_dir: Optional[str]) -> Optional[str]:
  """Why `--out` cannot be written, found before any run (not after the sweep), or None.

  Made and written to as the sweep will: permission checks alone pass for root in /proc.
  """
  if out_dir is None:
    return None
  try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
      pass
  except OSError as error:
    return f"--out {out_dir} cannot be written ({error.strerror}); pick a folder you can write to."
  return None


def run_command(args, parser) -> int:
  run, problem = _runs(args)
  problem = problem or _unwritable(args.out)
  if problem:
    parser.exit(2, f"python -m mmkit sweep: error: {problem}\n")
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  reports = sweep_reports(run, args.hints, args.window or [None], progress=not args.no_progress)
  rows = [r.summary() for r in reports]
  print(json.dumps(rows, indent=1) if args.json else format_table(rows))
  if args.out:
    for path in write_outputs(reports, args.out):
      print(f"wrote {path}", file=sys.stderr)
  return 0


def add_parser(commands) -> None:
  p = commands.add_parser(
    "sweep",
    help="run the keyed pipeline once per hint and tabulate swaps and memory",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  # Defaults are KeyedRun's (DEFAULT); argparse writes them into the help (%(default)s).
  # One option per KeyedRun field, from its `flag` metadata; the defaults are a run's.
  for setting in fields(KeyedRun):
    option, meta = "--" + setting.name.replace("_", "-"), setting.metadata
    if setting.name == "hint":
      p.add_argument("--hints", type=int, nargs="+", default=[1, 2, 4, 8], help=meta["help"])
    elif setting.name == "window":
      p.add_argument(option, type=float, nargs="+", metavar="SECONDS", help=meta["help"])
    elif meta["type"] is bool:
      p.add_argument(option, action="store_true", default=setting.default, help=meta["help"])
    else:
      p.add_argument(
        option,
        type=meta["type"],
        choices=meta["choices"] or None,
        default=setting.default,
        help=meta["help"] + (" (default %(default)s)" if setting.default is not None else ""),
      )
  p.add_argument("--out", metavar="DIR", help="also write sweep.csv and sweep.png here")
  p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
  p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
  p.set_defaults(func=run_command)
