"""mmkit.stats: Wilson intervals and McNemar's exact test, against hand and brute-force values."""

import dataclasses
import itertools

import numpy as np
import pytest

from mmkit.stats import PairedTest, mcnemar_exact, wilson_interval


def _flags(only_a: int, only_b: int, both: int = 0, neither: int = 0):
  """Right/wrong flags for two models with the given counts of each kind of pair."""
  pairs = [(1, 0)] * only_a + [(0, 1)] * only_b + [(1, 1)] * both + [(0, 0)] * neither
  return [bool(a) for a, _ in pairs], [bool(b) for _, b in pairs]


def _brute_force_p(only_a: int, only_b: int) -> float:
  """Two-sided p by listing every outcome of the discordant coin flips: no formula shared."""
  d, k = only_a + only_b, min(only_a, only_b)
  if d == 0:
    return 1.0
  tail = sum(1 for flips in itertools.product((0, 1), repeat=d) if sum(flips) <= k)
  return min(1.0, 2 * tail / 2**d)


def test_wilson_matches_the_hand_computed_interval_for_8_of_10():
  # p = 0.8, z^2 = 3.8416: centre 0.99208 / 1.38416, half 1.96 / 1.38416 * sqrt(0.025604).
  low, high = wilson_interval(8, 10)
  assert low == pytest.approx(0.49016, abs=1e-5)
  assert high == pytest.approx(0.94332, abs=1e-5)


def test_wilson_at_the_edges_and_with_no_data():
  assert wilson_interval(0, 0) == (0.0, 1.0)
  low, high = wilson_interval(0, 20)
  assert low == 0.0 and high == pytest.approx(1.96**2 / (20 + 1.96**2))
  low, high = wilson_interval(20, 20)
  assert high == 1.0 and low == pytest.approx(20 / (20 + 1.96**2))


def test_wilson_narrows_with_more_data_and_widens_with_z():
  narrow, wide = wilson_interval(400, 500), wilson_interval(40, 50)
  assert wide[0] < narrow[0] < 0.8 < narrow[1] < wide[1]
  assert wilson_interval(40, 50, z=2.58)[0] < wide[0]


@pytest.mark.parametrize(
  "correct, n, z", [(11, 10, 1.96), (-1, 10, 1.96), (3, -1, 1.96), (3, 10, 0)]
)
def test_wilson_refuses_impossible_counts(correct, n, z):
  with pytest.raises(ValueError):
    wilson_interval(correct, n, z)


def test_all_discordant_one_way_gives_twice_the_tail():
  test = mcnemar_exact(*_flags(10, 0, both=30, neither=5))
  assert (test.only_a, test.only_b, test.n) == (10, 0, 45)
  assert test.p_value == pytest.approx(2 * 0.5**10, rel=1e-12)
  assert test.difference == pytest.approx(10 / 45)


@pytest.mark.parametrize("only_a, only_b", [(5, 5), (0, 0), (6, 5)])
def test_a_balanced_split_or_no_discordant_pairs_gives_p_1(only_a, only_b):
  assert mcnemar_exact(*_flags(only_a, only_b, both=3)).p_value == 1.0


@pytest.mark.parametrize(
  "only_a, only_b", [(a, b) for a in range(9) for b in range(9) if a + b <= 14]
)
def test_p_value_matches_a_brute_force_count_and_is_symmetric(only_a, only_b):
  p = mcnemar_exact(*_flags(only_a, only_b, neither=2)).p_value
  assert p == pytest.approx(_brute_force_p(only_a, only_b), rel=1e-12)
  assert p == mcnemar_exact(*_flags(only_b, only_a, neither=2)).p_value


def test_large_counts_stay_exact_and_in_range():
  test = mcnemar_exact(*_flags(600, 500, both=4000))
  assert 0.0 < test.p_value < 0.05  # 600 vs 500 of 1100 is about 3 standard deviations
  assert mcnemar_exact(*_flags(5000, 0)).p_value < 1e-300  # 2 / 2**5000: no overflow, no error


def test_numpy_flags_and_the_difference_sign():
  a = np.array([True, True, False, False, True])
  b = np.array([False, True, True, True, True])
  test = mcnemar_exact(a, b)
  assert (test.only_a, test.only_b, test.n) == (1, 2, 5)
  assert test.difference == pytest.approx(-0.2)


def test_mismatched_lengths_name_both_lengths_and_the_fix():
  with pytest.raises(ValueError, match=r"3 items and b_correct 2.*same items"):
    mcnemar_exact([True, False, True], [True, False])
  with pytest.raises(ValueError, match="no pairs"):
    mcnemar_exact([], [])


def test_the_result_is_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    mcnemar_exact([True], [False]).p_value = 0.0


def test_says_switches_verdict_at_alpha():
  real = PairedTest(only_a=31, only_b=12, n=540, p_value=0.049)
  none = PairedTest(only_a=31, only_b=12, n=540, p_value=0.051)
  assert real.says().endswith("p = 0.049, a real difference at the 5% level")
  assert none.says().endswith("p = 0.051, no evidence of a difference at the 5% level")
  assert "no evidence of a difference at the 1% level" in real.says(alpha=0.01)
  assert "p = 0.05, a real" in PairedTest(9, 1, 50, 0.0496).says()
  assert "p = 0.0504, no evidence" in PairedTest(9, 1, 50, 0.0504).says()  # not "0.05"


def test_says_names_the_models_and_counts_from_a_real_test():
  line = mcnemar_exact(*_flags(31, 12, both=400, neither=97)).says(names=("the CNN", "the MLP"))
  assert line.startswith(
    "the CNN is right on 31 digits the MLP gets wrong, the MLP on 12 the other way"
  )
  assert "exact McNemar p = 0.0054" in line and line.endswith("a real difference at the 5% level")
  assert "p < 0.001" in mcnemar_exact(*_flags(20, 0)).says()
  assert "on 1 digit B gets wrong" in mcnemar_exact(*_flags(1, 1)).says()
