"""mmkit.plots: the figures' own arithmetic, checked against an independent implementation."""

import pytest
from scipy.stats import binomtest

from mmkit.plots import accuracy_figure, accuracy_interval, digits_figure


@pytest.mark.parametrize("correct,n", [(120, 122), (410, 418), (0, 10), (10, 10), (37, 90)])
def test_accuracy_interval_is_scipys_wilson_interval(correct, n):
  expected = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
  low, high = accuracy_interval(correct, n)
  assert low == pytest.approx(expected.low, abs=1e-3)
  assert high == pytest.approx(expected.high, abs=1e-3)


def test_accuracy_figure_draws_bars_from_zero_with_one_interval_per_arm():
  fig = accuracy_figure({"A": (120, 122), "B": (410, 418)})
  ax = fig.axes[0]
  assert ax.get_xlim() == (0, 1)
  bars = ax.patches
  assert len(bars) == 2 and all(b.get_x() == 0 for b in bars)
  assert sorted(round(b.get_width(), 3) for b in bars) == [round(410 / 418, 3), round(120 / 122, 3)]


def test_digits_figure_puts_each_digit_in_its_row_and_column_with_its_name():
  import numpy as np

  rows = {
    "a": np.random.default_rng(0).random((3, 64)),
    "b": np.random.default_rng(1).random((3, 64)),
  }
  fig = digits_figure(rows, n=3)
  ax = fig.axes[0]
  grid = ax.get_images()[0].get_array()
  assert np.array_equal(grid[9:17, 18:26], rows["b"][2].reshape(8, 8))  # row 1, column 2
  assert np.ma.getmaskarray(grid)[8].all()  # a gap between the rows
  assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
