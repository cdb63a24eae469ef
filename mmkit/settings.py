"""The settings of one keyed run (`KeyedRun`): defaults, checks, choices (03, 04_memory).

Defined once, here: `run_keyed` runs a KeyedRun, its RunReport carries it (`report.run`), and
`python -m mmkit sweep` builds its options from its defaults and checks them with `validate`.
Nothing here imports Beam or torch, so the command line refuses bad arguments at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from mmkit import data

__all__ = ["RUNNERS", "GROUPINGS", "LOADS", "STREAM_TICK_SECONDS", "KeyedRun"]

# direct: the DirectRunner in this process; multiprocess: its worker processes;
# interactive: Beam's InteractiveRunner, as in the notebooks (`mmkit.pipelines.new_pipeline`).
RUNNERS = ("direct", "multiprocess", "interactive")
# What reaches RunInference together: the stream as it comes, after a GroupByKey, or
# GroupIntoBatches per key (`mmkit.pipelines.keyed_inference_with_dead_letters`).
GROUPINGS = ("none", "gbk", "batches")
# How a keyed model is loaded: copy (Beam's PytorchModelHandlerTensor reads the file and copies it
# into a new module) or mmap (`mmkit.mmap_load`: the file mapped, nothing copied).
LOADS = ("copy", "mmap")
# A streaming run (`window` set) is delivered this much event time at once (mmkit.streaming).
STREAM_TICK_SECONDS = 1.0


@dataclass(frozen=True)
class KeyedRun:
  """The settings of one keyed run: how many models, the hint, the key stream, the batching."""

  models: int = 8
  hint: Optional[int] = None
  elements: int = 2000
  stream: str = "zipf"
  # None: the shipped specialists; a size: synthetic models that big
  model_mb: Optional[float] = None
  batch_size: int = 32
  runner: str = "direct"
  seed: int = 0
  # none | gbk | batches: what reaches RunInference together (see KeyedInference)
  group: str = "none"
  # Reshuffle after Create, so several worker processes share the elements.
  spread: bool = False
  # End the run once its process tree holds more than this many MB (a watchdog: mmkit.faults).
  memory_limit_mb: Optional[float] = None
  # copy | mmap: how each model is loaded (LOADS)
  load: str = "copy"
  # None: a batch pipeline (beam.Create). A number: a stream with event times (TestStream, the
  # DirectRunner in streaming mode): 0 serves events as they come, w > 0 puts fixed windows of
  # w seconds and a GroupByKey before inference (07_streaming, mmkit.streaming).
  window: Optional[float] = None

  def validate(self, cli: bool = False) -> "KeyedRun":
    """Raises ValueError naming the bad setting and the fix; returns self.

    `cli`: settings are named by their `python -m mmkit sweep` flags (`--batch-size 0`), not
    as arguments (`batch_size=0`).
    """

    def name(field: str) -> str:
      if cli:
        return "--hints" if field == "hint" else "--" + field.replace("_", "-")
      return "hint (max_models_per_worker_hint)" if field == "hint" else field

    def given(field: str, value) -> str:
      return f"{name(field)} {value}" if cli else f"{field}={value!r}"

    def positive_int(field: str) -> None:
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name(field)} must be a whole number >= 1, got {value!r}.")

    for field in ("models", "elements", "batch_size"):
      positive_int(field)
    if self.hint is not None:
      positive_int("hint")
    for field, choices in (
      ("stream", data.STREAMS),
      ("group", GROUPINGS),
      ("runner", RUNNERS),
      ("load", LOADS),
    ):
      if getattr(self, field) not in choices:
        raise ValueError(
          f"unknown {name(field)} {getattr(self, field)!r}: use one of {', '.join(choices)}."
        )
    for field in ("model_mb", "memory_limit_mb"):
      value = getattr(self, field)
      if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise ValueError(f"{name(field)} must be a finite number > 0, got {value!r}.")
    if self.model_mb is None and self.models > len(data.SOURCES):
      raise ValueError(
        f"only {len(data.SOURCES)} specialist models ship with the kit; for "
        f"{given('models', self.models)} pass {given('model_mb', 16)} (say) to use synthetic "
        "models."
      )
    if self.window is not None:
      self._check_window(name, given)
    if self.spread and self.runner != "multiprocess":
      raise ValueError(
        f"{name('spread')} needs {given('runner', 'multiprocess')}: one process has nothing "
        "to spread over."
      )
    return self

  def _check_window(self, name, given) -> None:
    window = self.window
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not window >= 0:
      raise ValueError(f"{name('window')} must be 0 or more seconds, got {window!r}.")
    ticks = window / STREAM_TICK_SECONDS
    if not math.isfinite(ticks) or abs(ticks - round(ticks)) > 1e-9:
      raise ValueError(
        f"{name('window')} must be 0 (serve events as they come) or a whole number of seconds "
        f"(the stream is delivered {STREAM_TICK_SECONDS:g} s at a time), got {window!r}."
      )
    if self.group != "none":
      raise ValueError(
        f"{given('group', self.group)} with a window: the window's own GroupByKey groups the "
        f"stream; leave {name('group')} none."
      )
    if self.runner != "direct":
      raise ValueError(
        f"{name('window')} needs {given('runner', 'direct')}: the stream runs on the "
        "DirectRunner in streaming mode, in this process (the InteractiveRunner collects "
        "nothing from a TestStream: docs/beam_findings.md, section 19)."
      )
