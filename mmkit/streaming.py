"""Keyed models on a stream: event times, windows before GroupByKey, and the latency they add (07).

On a stream, a `GroupByKey` groups only within a window: a key's model is loaded at most once
per window, and every element waits for its window to close. `event_times` gives a keyed
stream its event times (bursts), `replay_stream` replays it through Beam's
`TestStream` a tick of event time at a time, `windowed` puts the windows and the GroupByKey
before inference, and `added_latency` / `open_window_elements` compute exactly, from the
timestamps, what the windows cost: the wait of each element (window end minus event time) and
the elements the open windows hold. `mmkit.core.simulate.stream_batches` predicts the batches, hence
the loads, without Beam.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from mmkit.settings import STREAM_TICK_SECONDS

__all__ = [
  "EVENTS_PER_SECOND",
  "TICK_SECONDS",
  "event_times",
  "replay_stream",
  "windowed",
  "streaming_options",
  "window_end",
  "added_latency",
  "latency_summary",
  "open_window_elements",
]

EVENTS_PER_SECOND = 50.0  # the stream's mean rate outside bursts
# Event time delivered at once; the watermark then moves to the tick's end.
TICK_SECONDS = STREAM_TICK_SECONDS


def event_times(n: int, rate: float = EVENTS_PER_SECOND, seed: int = 0) -> list[float]:
  """Event times of `n` elements, in seconds: random arrivals at `rate` per second, with bursts.

  One second in five the rate is four times higher, as when a tenant or a device fleet wakes.
  """
  rng = np.random.default_rng(seed)
  times, t = [], 0.0
  for _ in range(n):
    burst = math.floor(t) % 5 == 4
    t += rng.exponential(1.0 / (rate * (4 if burst else 1)))
    times.append(round(t, 6))
  return times


def replay_stream(
  elements: Sequence, times: Sequence[float], tick: float = TICK_SECONDS
) -> TestStream:
  """Beam's TestStream replaying `elements` at their event `times`, a `tick` at a time.

  Each tick's elements arrive together (one bundle) and the watermark then moves to the tick's
  end, so a window closes as soon as its last tick has arrived: no element is late.
  """
  stream = TestStream()
  ticks: dict[int, list] = {}
  for element, t in zip(elements, times):
    ticks.setdefault(math.floor(t / tick), []).append(TimestampedValue(element, t))
  for index in range(min(ticks, default=0), max(ticks, default=-1) + 1):
    if ticks.get(index):
      stream = stream.add_elements(ticks[index])
    stream = stream.advance_watermark_to((index + 1) * tick)
  return stream.advance_watermark_to_infinity()


def _ungroup(key_values):
  key, values = key_values
  return [(key, value) for value in values]


@beam.ptransform_fn
def windowed(pcoll: beam.PCollection, window: float) -> beam.PCollection:
  """Fixed windows of `window` seconds, then a GroupByKey, then the elements one by one again."""
  return (
    pcoll
    | "Window" >> beam.WindowInto(FixedWindows(window))
    | "GroupByKey" >> beam.GroupByKey()
    | "Ungroup" >> beam.FlatMap(_ungroup)
  )


def streaming_options() -> PipelineOptions:
  """The DirectRunner in streaming mode, in this process (where TestStream runs in Beam 2.77)."""
  return PipelineOptions(runner="DirectRunner", streaming=True)


def window_end(t: float, window: float) -> float:
  """End of the fixed window of `window` seconds that holds event time `t`."""
  return (math.floor(t / window) + 1) * window


def added_latency(times: Sequence[float], window: Optional[float]) -> list[float]:
  """Seconds each element waits for its window to close (0 without a window): exact, from times."""
  if not window:
    return [0.0] * len(times)
  return [window_end(t, window) - t for t in times]


def latency_summary(times: Sequence[float], window: Optional[float]) -> dict:
  """Median and 99th percentile of `added_latency`, in seconds."""
  waits = added_latency(times, window)
  if not waits:
    return {"latency_median_s": 0.0, "latency_p99_s": 0.0}
  return {
    "latency_median_s": round(float(np.median(waits)), 3),
    "latency_p99_s": round(float(np.percentile(waits, 99)), 3),
  }


def open_window_elements(
  times: Sequence[float], window: Optional[float], tick: float = TICK_SECONDS
) -> int:
  """The most elements the open windows hold at once (what the GroupByKey keeps waiting).

  Counted after each tick's delivery, before the windows that the tick closes are emitted.
  """
  if not window:
    return 0
  arrivals: dict[int, int] = {}
  closing: dict[int, int] = {}  # tick index -> elements whose window closes at its end
  for t in times:
    arrivals[math.floor(t / tick)] = arrivals.get(math.floor(t / tick), 0) + 1
    last_tick = math.ceil(window_end(t, window) / tick - 1e-9) - 1
    closing[last_tick] = closing.get(last_tick, 0) + 1
  held = most = 0
  for index in sorted(set(arrivals) | set(closing)):
    held += arrivals.get(index, 0)
    most = max(most, held)
    held -= closing.get(index, 0)
  return most
