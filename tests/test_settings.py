"""mmkit.settings: a run's settings are one value, defined once and checked once."""

import argparse
import dataclasses
import re

import pytest

from mmkit.settings import KeyedRun


@pytest.mark.parametrize(
  "settings, as_argument, as_flag",
  [
    ({"hint": 0}, "hint (max_models_per_worker_hint) must be", "--hints must be"),
    ({"batch_size": 0}, "batch_size must be", "--batch-size must be"),
    ({"models": 12}, "for models=12 pass model_mb=16", "for --models 12 pass --model-mb 16"),
    ({"model_mb": -1.0}, "model_mb must be a finite number > 0", "--model-mb must be a finite"),
    ({"model_mb": float("inf")}, "model_mb must be a finite", "--model-mb must be a finite"),
    ({"window": 1.5}, "window must be 0", "--window must be 0"),
    ({"stream": "nope"}, "unknown stream 'nope'", "unknown --stream 'nope'"),
    (
      {"spread": True},
      "spread needs runner='multiprocess'",
      "--spread needs --runner multiprocess",
    ),
  ],
)
def test_problems_are_named_as_arguments_or_as_the_sweeps_flags(settings, as_argument, as_flag):
  with pytest.raises(ValueError, match=re.escape(as_argument)):
    KeyedRun(**settings)  # a run that exists is valid: made, it is checked
  with pytest.raises(ValueError, match=re.escape(as_flag)):
    KeyedRun.from_flags(**settings)


def test_a_run_made_again_with_a_bad_setting_is_refused_too():
  run = KeyedRun(models=12, model_mb=4.0, hint=3, runner="multiprocess", spread=True)
  assert KeyedRun.from_flags(**dataclasses.asdict(run)) == run
  with pytest.raises(ValueError, match="batch_size must be"):
    dataclasses.replace(run, batch_size=0)


def test_the_run_owns_its_key_stream():
  from mmkit import data

  run = KeyedRun(models=3, elements=50, stream="zipf", seed=4)
  keys = data.model_keys(3)
  assert run.key_stream() == data.key_stream("zipf", keys, 50, seed=4)
  assert run.key_stream() != dataclasses.replace(run, seed=5).key_stream()


def test_the_sweeps_options_default_to_a_runs_defaults():
  from mmkit import sweep

  parser = argparse.ArgumentParser()
  sweep.add_parser(parser.add_subparsers())
  args = parser.parse_args(["sweep"])
  defaults = KeyedRun()
  for field in dataclasses.fields(KeyedRun):
    if field.name != "hint":  # the sweep runs several hints
      assert getattr(args, field.name) == getattr(defaults, field.name), field.name
