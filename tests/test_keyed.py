"""mmkit.core.keyed: fixed batches make swaps reproducible; evicted servers can be stopped."""

import apache_beam as beam
import pytest

from mmkit.experiment import run_keyed
from mmkit.settings import KeyedRun


def test_too_small_hint_swaps_and_a_hint_as_big_as_the_models_loads_each_once():
  thrashing = run_keyed(KeyedRun(models=4, hint=1, elements=200, stream="cycle", batch_size=1))
  assert thrashing.loads == 200  # round robin with room for one model: every element swaps
  roomy = run_keyed(KeyedRun(models=4, hint=4, elements=200, stream="cycle", batch_size=1))
  assert roomy.loads == 4 and roomy.loads_by_key == {k: 1 for k in roomy.loads_by_key}


def test_fixed_batch_size_controls_swaps():
  # One batch holding the whole stream needs each model once, whatever the hint.
  one_batch = run_keyed(KeyedRun(models=4, hint=1, elements=64, stream="cycle", batch_size=64))
  assert one_batch.loads == 4


@pytest.mark.parametrize("stop_servers", [False, True])
def test_evicted_models_proxy_servers_run_until_the_end_unless_stopped(stop_servers):
  import threading

  from apache_beam.ml.inference.base import KeyModelMapping

  from mmkit import data
  from mmkit.core.cleanup import release_resident_models
  from mmkit.core.keyed import FixedBatchKeyedModelHandler, ObservedModelManager
  from mmkit.experiment import model_handlers
  from mmkit.inputs import keyed_examples
  from mmkit.pipelines import KeyedInference, new_pipeline

  handler = FixedBatchKeyedModelHandler(
    [KeyModelMapping([k], mh) for k, mh in model_handlers(4).items()],
    max_models_per_worker_hint=1,
    batch_size=1,
    stop_evicted_servers=stop_servers,
  )
  examples = keyed_examples(data.key_stream("cycle", data.SOURCES[:4], 120))
  pipeline = new_pipeline("direct")
  _ = pipeline | beam.Create(examples, reshuffle=False) | KeyedInference(handler)
  before = threading.active_count()
  pipeline.run().wait_until_finish()
  grown = threading.active_count() - before
  release_resident_models()
  if stop_servers:  # stopped in groups: at most a group's worth is left
    assert grown <= 2 * ObservedModelManager.RETIRE_EVERY + 10
  else:  # Beam as is: two threads per load (120 loads) until the run's end
    assert grown >= 2 * 120
  assert threading.active_count() <= before + 5  # the kit's cleanup ends them all
