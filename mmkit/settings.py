"""The settings of one keyed run (`KeyedRun`): defaults, checks, choices (03, 04_memory).

Defined once, here: `run_keyed` runs a KeyedRun, its RunReport carries it (`report.run`), and
`python -m mmkit sweep` builds its options from its defaults and checks them with `validate`.
Nothing here imports Beam or torch, so the command line refuses bad arguments at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Optional

from mmkit import data

__all__ = ["RUNNERS", "GROUPINGS", "LOADS", "STREAM_TICK_SECONDS", "KeyedRun", "flag"]

# direct: the DirectRunner in this process; multiprocess: its worker processes;
# interactive: Beam's InteractiveRunner, as in the notebooks (`mmkit.pipelines.new_pipeline`).
RUNNERS = ("direct", "multiprocess", "interactive")
# What reaches RunInference together: the stream as it comes, after a GroupByKey, or
# GroupIntoBatches per key (`mmkit.pipelines.keyed_inference_with_dead_letters`).
GROUPINGS = ("none", "gbk", "batches")
# How a keyed model is loaded: copy (Beam's PytorchModelHandlerTensor reads the file and copies it
# into a new module) or mmap (`mmkit.core.mmap_load`: the file mapped, nothing copied).
LOADS = ("copy", "mmap")
# A streaming run (`window` set) is delivered this much event time at once (mmkit.streaming).
STREAM_TICK_SECONDS = 1.0


def flag(kind: type, help: str, choices: tuple = ()) -> dict:
  """A field's command-line option: its type, its help, its choices (`mmkit.sweep.add_parser`)."""
  return {"type": kind, "help": help, "choices": choices}


@dataclass(frozen=True)
class KeyedRun:
  """The settings of one keyed run: how many models, the hint, the key stream, the batching."""

  # Each field is also an option of `python -m mmkit sweep` (`flag`: its help; `mmkit.sweep`).
  models: int = dataclasses.field(default=8, metadata=flag(int, "number of keyed models"))
  # The sweep runs several: --hints 1 2 4 8
  hint: Optional[int] = dataclasses.field(
    default=None, metadata=flag(int, "max_models_per_worker_hint values, one run each")
  )
  elements: int = dataclasses.field(default=2000, metadata=flag(int, "elements per run"))
  stream: str = dataclasses.field(
    default="zipf", metadata=flag(str, "order of keys in the input", data.STREAMS)
  )
  # None: the shipped specialists; a size: synthetic models that big
  model_mb: Optional[float] = dataclasses.field(
    default=None,
    metadata=flag(
      float,
      "use synthetic models of this many MB (made once in a cache dir); "
      "default: the shipped specialist models",
    ),
  )
  batch_size: int = dataclasses.field(
    default=32, metadata=flag(int, "fixed RunInference batch size")
  )
  runner: str = dataclasses.field(
    default="direct",
    metadata=flag(
      str,
      "direct: in this process; multiprocess: DirectRunner with 2 worker processes; "
      "interactive: the InteractiveRunner",
      RUNNERS,
    ),
  )
  seed: int = dataclasses.field(
    default=0, metadata=flag(int, "seed of the key stream and the examples")
  )
  # What reaches RunInference together (see mmkit.pipelines.KeyedInference)
  group: str = dataclasses.field(
    default="none",
    metadata=flag(
      str,
      "none: the stream as it comes; gbk: GroupByKey before inference; "
      "batches: GroupIntoBatches per key",
      GROUPINGS,
    ),
  )
  # Reshuffle after Create, so several worker processes share the elements.
  spread: bool = dataclasses.field(
    default=False,
    metadata=flag(
      bool,
      "reshuffle the elements so every worker process gets some (multiprocess); "
      "loses the stream's order, so no simulated loads",
    ),
  )
  # End the run once its process tree holds more than this many MB (a watchdog: mmkit.faults).
  memory_limit_mb: Optional[float] = dataclasses.field(
    default=None,
    metadata=flag(
      float,
      "end a run once its processes hold more than M MB (resident, as peak_rss_mb counts "
      "them); its row's error says so and the sweep goes on",
    ),
  )
  load: str = dataclasses.field(
    default="copy",
    metadata=flag(
      str,
      "copy: Beam's PyTorch handler (reads the file, copies it into a new module); "
      "mmap: the kit's handler maps the file, copying nothing (mmkit.core.mmap_load)",
      LOADS,
    ),
  )
  # None: a batch pipeline (beam.Create). A number: a stream with event times (TestStream, the
  # DirectRunner in streaming mode): 0 serves events as they come, w > 0 puts fixed windows of
  # w seconds and a GroupByKey before inference (07_streaming, mmkit.streaming).
  window: Optional[float] = dataclasses.field(
    default=None,
    metadata=flag(
      float,
      "run a stream with event times instead (TestStream, streaming DirectRunner), once per "
      "hint and window: 0 serves events as they come, w > 0 puts windows of w seconds and a "
      "GroupByKey before inference; adds the latency the window adds (median, p99)",
    ),
  )

  def __post_init__(self):
    _check(self)  # a KeyedRun that exists is valid: no caller has to remember to check it

  @classmethod
  def from_flags(cls, **settings) -> "KeyedRun":
    """A run from `python -m mmkit sweep`'s options: a bad one is named by its flag
    (`--batch-size 0`), not as an argument (`batch_size=0`)."""
    defaults = {f.name: f.default for f in fields(cls)}
    _check(SimpleNamespace(**{**defaults, **settings}), cli=True)
    return cls(**settings)

  def key_stream(self) -> list[str]:
    """The run's keys in the order its elements arrive (`stream`, `seed`; mmkit.data)."""
    return data.key_stream(self.stream, data.model_keys(self.models), self.elements, seed=self.seed)


def _check(run, cli: bool = False) -> None:
  """Raises ValueError naming the bad setting of a run and the fix (`cli`: by its flag)."""

  def name(field: str) -> str:
    if cli:
      return "--hints" if field == "hint" else "--" + field.replace("_", "-")
    return "hint (max_models_per_worker_hint)" if field == "hint" else field

  def given(field: str, value) -> str:
    return f"{name(field)} {value}" if cli else f"{field}={value!r}"

  def positive_int(field: str) -> None:
    value = getattr(run, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name(field)} must be a whole number >= 1, got {value!r}.")

  for field in ("models", "elements", "batch_size"):
    positive_int(field)
  if run.hint is not None:
    positive_int("hint")
  for field, choices in (
    ("stream", data.STREAMS),
    ("group", GROUPINGS),
    ("runner", RUNNERS),
    ("load", LOADS),
  ):
    if getattr(run, field) not in choices:
      raise ValueError(
        f"unknown {name(field)} {getattr(run, field)!r}: use one of {', '.join(choices)}."
      )
  for field in ("model_mb", "memory_limit_mb"):
    value = getattr(run, field)
    if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
      raise ValueError(f"{name(field)} must be a finite number > 0, got {value!r}.")
  if run.model_mb is None and run.models > len(data.SOURCES):
    raise ValueError(
      f"only {len(data.SOURCES)} specialist models ship with the kit; for "
      f"{given('models', run.models)} pass {given('model_mb', 16)} (say) to use synthetic "
      "models."
    )
  if run.window is not None:
    _check_window(run, name, given)
  if run.spread and run.runner != "multiprocess":
    raise ValueError(
      f"{name('spread')} needs {given('runner', 'multiprocess')}: one process has nothing "
      "to spread over."
    )


def _check_window(run, name, given) -> None:
  window = run.window
  if isinstance(window, bool) or not isinstance(window, (int, float)) or not window >= 0:
    raise ValueError(f"{name('window')} must be 0 or more seconds, got {window!r}.")
  ticks = window / STREAM_TICK_SECONDS
  if not math.isfinite(ticks) or abs(ticks - round(ticks)) > 1e-9:
    raise ValueError(
      f"{name('window')} must be 0 (serve events as they come) or a whole number of seconds "
      f"(the stream is delivered {STREAM_TICK_SECONDS:g} s at a time), got {window!r}."
    )
  if run.group != "none":
    raise ValueError(
      f"{given('group', run.group)} with a window: the window's own GroupByKey groups the "
      f"stream; leave {name('group')} none."
    )
  if run.runner != "direct":
    raise ValueError(
      f"{name('window')} needs {given('runner', 'direct')}: the stream runs on the "
      "DirectRunner in streaming mode, in this process (the InteractiveRunner collects "
      "nothing from a TestStream: docs/beam_findings.md, section 19)."
    )
