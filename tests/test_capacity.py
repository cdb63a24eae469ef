"""The capacity helper's arithmetic."""

import pytest

from mmkit.core.capacity import recommend_hint


def test_hint_is_how_many_of_the_largest_models_fit_one_worker():
  # 8 GB, 2 workers: 4096 MB each; 20% buffer and 500 MB overhead leave 2776.8 MB for models.
  advice = recommend_hint(
    [1000] * 8, machine_mb=8192, workers_per_machine=2, worker_overhead_mb=500, buffer=0.2
  )
  assert advice.per_worker_mb == 4096 and round(advice.usable_mb, 1) == 2776.8
  assert advice.hint == 2 and advice.largest_models_mb == 2000
  assert "max_models_per_worker_hint = 2" in str(advice)


def test_more_workers_per_machine_means_fewer_models_each():
  sizes = [512] * 40
  hints = [recommend_hint(sizes, 16384, workers_per_machine=w).hint for w in (1, 2, 4)]
  assert hints[0] > hints[1] > hints[2]


def test_sizes_are_taken_largest_first_and_no_fit_is_said_plainly():
  # Any `hint` models may be resident together, so the largest must fit: 900 + 100, not 100 x 3.
  assert (
    recommend_hint([100, 100, 100, 900], machine_mb=1500, worker_overhead_mb=500, buffer=0.0).hint
    == 2
  )
  advice = recommend_hint([4000], machine_mb=2000)
  assert advice.hint == 0 and "no model fits" in str(advice)


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(model_mb=[], machine_mb=1000), "model_mb"),
    (dict(model_mb=[10], machine_mb=1000, workers_per_machine=0), "workers_per_machine"),
    (dict(model_mb=[10], machine_mb=1000, buffer=1.5), "buffer"),
  ],
)
def test_bad_input_names_the_problem(kwargs, message):
  with pytest.raises(ValueError, match=message):
    recommend_hint(**kwargs)
