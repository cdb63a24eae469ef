"""Is A really better than B? McNemar and Wilson (01_ab_branch, 03_keyed_models, 06_ensembles).

Two models scored on the same digits differ only where one is right and the other wrong (the
discordant pairs); McNemar's exact test asks whether that split is more lopsided than a fair coin
would make it. Exact binomial sums with `math.comb`: no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["PairedTest", "wilson_interval", "mcnemar_exact"]


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """The Wilson score interval for `correct` of `n` (95% at z=1.96); (0.0, 1.0) when n is 0."""
  if n < 0 or not 0 <= correct <= max(n, 0):
    raise ValueError(f"correct must be between 0 and n; got correct={correct}, n={n}.")
  if z <= 0:
    raise ValueError(f"z must be > 0 (1.96 for 95%), got {z}.")
  if n == 0:
    return 0.0, 1.0
  p, z2 = correct / n, z * z
  centre = (p + z2 / (2 * n)) / (1 + z2 / n)
  half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
  return max(0.0, centre - half), min(1.0, centre + half)


def _two_sided_binomial_p(k: int, d: int) -> float:
  """min(1, 2 * P(X <= k)) for X ~ Binomial(d, 0.5), exactly in integers; 1.0 when d is 0."""
  if d == 0:
    return 1.0
  tail = sum(math.comb(d, i) for i in range(k + 1))
  return min(1.0, 2 * tail / 2**d)


@dataclass(frozen=True)
class PairedTest:
  """Two models on the same items: where each alone was right, and McNemar's exact p-value."""

  only_a: int
  only_b: int
  n: int
  p_value: float

  @property
  def difference(self) -> float:
    """A's accuracy minus B's on the same items: (only_a - only_b) / n."""
    return (self.only_a - self.only_b) / self.n

  def says(self, alpha: float = 0.05, names: tuple[str, str] = ("A", "B")) -> str:
    """One line in plain English: the discordant counts, p, and the verdict (p <= alpha: real)."""
    a, b = names
    shown = f"{self.p_value:.2g}"
    if (float(shown) <= alpha) != (self.p_value <= alpha):  # rounding must not cross alpha
      shown = f"{self.p_value:.4g}"
    p = "p < 0.001" if self.p_value < 0.001 else f"p = {shown}"
    level = f"{alpha * 100:g}%"
    verdict = (
      f"a real difference at the {level} level"
      if self.p_value <= alpha
      else f"no evidence of a difference at the {level} level"
    )
    return (
      f"{a} is right on {self.only_a} digit{'s' * (self.only_a != 1)} {b} gets wrong, "
      f"{b} on {self.only_b} the other way: exact McNemar {p}, {verdict}"
    )


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> PairedTest:
  """McNemar's exact test on paired right/wrong flags: two-sided binomial on discordant pairs."""
  if len(a_correct) != len(b_correct):
    raise ValueError(
      f"a_correct has {len(a_correct)} items and b_correct {len(b_correct)}: score both models "
      "on the same items in the same order (join by id first)."
    )
  if len(a_correct) == 0:
    raise ValueError("no pairs to compare: score both models on at least one item.")
  only_a = sum(1 for a, b in zip(a_correct, b_correct) if bool(a) and not bool(b))
  only_b = sum(1 for a, b in zip(a_correct, b_correct) if bool(b) and not bool(a))
  p = _two_sided_binomial_p(min(only_a, only_b), only_a + only_b)
  return PairedTest(only_a=only_a, only_b=only_b, n=len(a_correct), p_value=p)
