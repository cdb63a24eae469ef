"""mmkit.inputs: every DoFn makes its tensors from the one cached tensor per cohort."""

import numpy as np
import torch

from mmkit import data
from mmkit.inputs import (
  ToKeyedTensor,
  ToKeyedTensorOrPass,
  ToTensor,
  cohort_tensor,
  digit_ids,
  keyed_examples,
)


def test_cohort_tensor_is_the_test_split_as_float32_made_once():
  x, _ = data.cohort("rotated", "test")
  tensor = cohort_tensor("rotated")
  assert tensor.dtype == torch.float32 and np.array_equal(tensor.numpy(), x)
  assert cohort_tensor("rotated") is tensor


def test_id_and_keyed_elements_become_the_digit_their_source_sees():
  ((element_id, by_id),) = ToTensor("noisy").process(7)
  ((key, by_key),) = ToKeyedTensor().process(("noisy-1", 7))  # a second model on the same source
  assert element_id == 7 and key == "noisy-1"
  assert torch.equal(by_id, by_key) and torch.equal(by_id, cohort_tensor("noisy")[7])
  by_id += 1  # a copy: changing an element leaves the cached cohort alone
  assert not torch.equal(by_id, cohort_tensor("noisy")[7])


def test_ready_tensors_pass_through_and_indices_are_made_into_tensors():
  ready = ("clean", torch.zeros(64))
  assert list(ToKeyedTensorOrPass().process(ready)) == [ready]
  ((_, made),) = ToKeyedTensorOrPass().process(("clean", 3))
  assert torch.equal(made, cohort_tensor("clean")[3])


def test_element_ids_and_pairs_index_the_test_split():
  n_test = len(data.split_indices("test"))
  assert digit_ids("clean") == list(range(n_test)) and digit_ids("clean", 5) == [0, 1, 2, 3, 4]
  pairs = keyed_examples(["clean", "noisy"] * 50, seed=3)
  assert [k for k, _ in pairs] == ["clean", "noisy"] * 50
  assert all(0 <= i < n_test for _, i in pairs)
  assert pairs == keyed_examples(["clean", "noisy"] * 50, seed=3)  # the same on every call


def test_keyed_examples_draw_digits_independently_of_the_key_stream():
  examples = keyed_examples(data.key_stream("uniform", data.SOURCES, 4000, seed=0), seed=0)
  n_test = len(data.split_indices("test"))
  for source in ("clean", "dimmed"):
    indices = [i for k, i in examples if k == source]
    # Every key sees digits from the whole test split, not one band of it.
    assert min(indices) < n_test * 0.1 and max(indices) > n_test * 0.9
