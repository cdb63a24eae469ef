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
  run = KeyedRun(**settings)
  with pytest.raises(ValueError, match=re.escape(as_argument)):
    run.validate()
  with pytest.raises(ValueError, match=re.escape(as_flag)):
    run.validate(cli=True)


def test_a_valid_run_is_returned_as_is():
  run = KeyedRun(models=12, model_mb=4.0, hint=3, runner="multiprocess", spread=True)
  assert run.validate() is run and run.validate(cli=True) is run


def test_the_sweeps_options_default_to_a_runs_defaults():
  from mmkit import sweep

  parser = argparse.ArgumentParser()
  sweep.add_parser(parser.add_subparsers())
  args = parser.parse_args(["sweep"])
  defaults = KeyedRun()
  for field in dataclasses.fields(KeyedRun):
    if field.name != "hint":  # the sweep runs several hints
      assert getattr(args, field.name) == getattr(defaults, field.name), field.name
