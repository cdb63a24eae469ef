"""The offline data, cohorts, key streams and models."""

from collections import Counter

import numpy as np
import pytest
import torch

from mmkit import data, models
from mmkit.train import accuracy


def test_digits_load_offline_scaled_and_split_without_overlap():
  x, y = data.load_digits()
  assert x.shape == (1797, 64) and x.dtype == np.float32 and 0 <= x.min() and x.max() == 1.0
  assert set(np.unique(y)) == set(range(10))
  train, test = data.split_indices("train"), data.split_indices("test")
  assert len(train) + len(test) == 1797 and not set(train) & set(test)


def test_every_source_is_a_deterministic_distortion_of_the_same_digits():
  clean, labels = data.cohort("clean")
  assert len(data.SOURCES) >= 8
  for source in data.SOURCES[1:]:
    x, y = data.cohort(source)
    assert x.shape == clean.shape and (y == labels).all()
    assert not np.allclose(x, clean)
    assert np.array_equal(
      x,
      data.apply_source(
        source,
        data.load_digits()[0][data.split_indices("test")],
        seed=data.SOURCES.index(source) + 100,
      ),
    )


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(ValueError, match="clean, noisy"):
    data.apply_source("thermal", np.zeros((1, 64), np.float32))
  with pytest.raises(ValueError, match="uniform, zipf, cycle, sorted"):
    data.key_stream("bursty", ["a"], 3)


def test_key_streams_have_their_shapes():
  keys = list("abcd")
  assert data.key_stream("cycle", keys, 8) == keys * 2
  counts = Counter(data.key_stream("zipf", keys, 4000))
  assert counts["a"] > 2 * 1000 and counts["a"] > counts["b"] > counts["d"]
  ordered = data.key_stream("sorted", keys, 400)
  assert ordered == sorted(ordered, key=keys.index)  # each key's elements contiguous
  assert set(data.key_stream("uniform", keys, 400)) == set(keys)


def test_shipped_models_load_and_beat_the_general_model_on_their_cohort():
  for source in ("rotated", "inverted", "shifted"):
    x, y = data.cohort(source)
    assert accuracy(models.load_model(f"specialist_{source}"), x, y) > 0.85
    assert accuracy(models.load_model("general"), x, y) < 0.5


def test_missing_weights_say_how_to_make_them(tmp_path, monkeypatch):
  monkeypatch.setenv("MMKIT_MODELS", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="python -m mmkit.train"):
    models.load_model("general")


def test_sized_models_take_the_requested_memory_and_are_cached_and_distinct(tmp_path, monkeypatch):
  monkeypatch.setenv("MMKIT_CACHE", str(tmp_path))
  model = models.SizedModel(8)
  megabytes = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
  assert abs(megabytes - 8) / 8 < 0.02
  first = models.sized_model_path(8, 0)
  mtime = first.stat().st_mtime_ns
  assert models.sized_model_path(8, 0).stat().st_mtime_ns == mtime  # made once
  a, b = (torch.load(models.sized_model_path(8, i), weights_only=True) for i in (0, 1))
  assert not torch.equal(a["net.2.weight"], b["net.2.weight"])


def test_training_reproduces_the_shipped_models(tmp_path):
  import json

  from mmkit.train import train_all

  threads = torch.get_num_threads()
  try:
    metrics = train_all(tmp_path)
  finally:  # train_all pins torch to one thread; give the rest of the suite its cores back
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
  shipped = json.load(open(models.models_dir() / "metrics.json"))
  for name, entry in metrics["models"].items():
    # Byte-identical on this machine (see data/README.md); other CPUs may round differently.
    assert (
      abs(entry.get("test_accuracy", 0) - shipped["models"][name].get("test_accuracy", 0)) <= 0.01
    )
  assert (
    metrics["sequence"]["noisy_with_denoiser"]
    > metrics["sequence"]["noisy_without_denoiser"] + 0.05
  )


def test_models_module_names_the_same_sources_as_the_data():
  assert models.SOURCES == data.SOURCES  # repeated so models.py can be copied alone
  assert {f"specialist_{s}" for s in data.SOURCES} <= set(models.MODEL_ZOO)
