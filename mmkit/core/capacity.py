"""How many models fit a worker: a hint from memory sums (04, docs/runners.md).

Copy this file alone into a project (standard library only); `python capacity.py` runs its
example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["CapacityAdvice", "recommend_hint"]


@dataclass(frozen=True)
class CapacityAdvice:
  """A recommended hint and the arithmetic behind it, in MB."""

  hint: int
  per_worker_mb: float
  usable_mb: float
  largest_models_mb: float
  explanation: str

  def __str__(self) -> str:
    return self.explanation


def recommend_hint(
  model_mb: Sequence[float],
  machine_mb: float,
  workers_per_machine: int = 1,
  worker_overhead_mb: float = 500.0,
  buffer: float = 0.2,
) -> CapacityAdvice:
  """The largest hint such that every worker process can hold its `hint` largest models at once.

  Each of `workers_per_machine` processes gets an equal share of `machine_mb`; from it come the
  worker's own footprint (Python, Beam, torch: ~400-600 MB measured here) and a `buffer` share
  kept free, because freed models do not always return their memory at once.
  """
  if not model_mb or any(m <= 0 for m in model_mb):
    raise ValueError("model_mb must list each model's size in MB (all > 0).")
  if workers_per_machine < 1:
    raise ValueError(f"workers_per_machine must be >= 1, got {workers_per_machine}.")
  if not 0 <= buffer < 1:
    raise ValueError(f"buffer is a share of memory kept free, between 0 and 1; got {buffer}.")
  per_worker = machine_mb / workers_per_machine
  usable = per_worker * (1 - buffer) - worker_overhead_mb
  largest = sorted(model_mb, reverse=True)
  hint, total = 0, 0.0
  for size in largest:
    if total + size > usable:
      break
    hint, total = hint + 1, total + size
  lines = [
    f"{machine_mb:.0f} MB / {workers_per_machine} worker process(es)"
    f" = {per_worker:.0f} MB per worker",
    f"{per_worker:.0f} MB x (1 - {buffer:.0%} buffer)"
    f" - {worker_overhead_mb:.0f} MB worker overhead "
    f"= {usable:.0f} MB for models",
    f"the {hint} largest models take {total:.0f} MB"
    + (
      f"; one more ({largest[hint]:.0f} MB) would not fit"
      if hint < len(largest)
      else "; all models fit"
    ),
  ]
  if hint == 0:
    lines.append("no model fits: use bigger workers, fewer workers per machine, or smaller models")
  else:
    lines.append(f"max_models_per_worker_hint = {hint}")
  return CapacityAdvice(max(hint, 0), per_worker, usable, total, "\n".join(lines))


if __name__ == "__main__":
  import json

  # Eight 64 MB models, a 2 GB worker machine running one worker process.
  advice = recommend_hint([64.0] * 8, machine_mb=2048)
  print(advice)
  print(json.dumps({"hint": advice.hint, "usable_mb": advice.usable_mb}))
