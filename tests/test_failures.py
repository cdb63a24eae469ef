"""Bad input: clear errors up front, and nothing lost at run time."""

import apache_beam as beam
import pytest
import torch
from apache_beam.ml.inference.base import KeyModelMapping
from apache_beam.testing.util import assert_that, equal_to

from mmkit import models
from mmkit.core.cleanup import release_resident_models
from mmkit.core.keyed import FixedBatchKeyedModelHandler, SetupError, keyed_handler
from mmkit.core.tracer import Tracer
from mmkit.experiment import model_handlers
from mmkit.pipelines import CountElements, keyed_inference_with_dead_letters
from mmkit.report import RunReport
from mmkit.validate import check_input_shape, check_state_dict


def test_missing_model_file_names_the_path_and_the_fix(tmp_path):
  with pytest.raises(SetupError, match=r"does not exist.*python -m mmkit.train"):
    check_state_dict(str(tmp_path / "nope.pt"), models.MLPClassifier)


def test_a_file_that_is_not_a_state_dict_is_named(tmp_path):
  path = tmp_path / "junk.pt"
  path.write_bytes(b"this is not a checkpoint")
  with pytest.raises(SetupError, match="not a torch state dict"):
    check_state_dict(str(path), models.MLPClassifier)


def test_a_whole_pickled_model_is_not_a_state_dict(tmp_path):
  path = tmp_path / "model.pt"
  torch.save([1, 2, 3], path)
  with pytest.raises(SetupError, match="not a state dict"):
    check_state_dict(str(path), models.MLPClassifier)


def test_a_state_dict_for_another_model_class_says_which_class_and_what_differs():
  with pytest.raises(
    SetupError,
    match=r"does not fit ConvClassifier.*Missing key|does not fit ConvClassifier.*Unexpected",
  ):
    check_state_dict(str(models.model_path("ab_mlp")), models.ConvClassifier, {"channels": 16})
  with pytest.raises(SetupError, match="size mismatch"):
    check_state_dict(str(models.model_path("general")), models.MLPClassifier, {"hidden": 32})


def test_mapping_errors_come_from_the_kit_with_a_fix():
  mh = model_handlers(1)["clean"]
  with pytest.raises(SetupError, match="empty key list"):
    FixedBatchKeyedModelHandler([KeyModelMapping([], mh)])
  with pytest.raises(SetupError, match=r"'clean' is mapped to two models.*remove it"):
    FixedBatchKeyedModelHandler(
      [KeyModelMapping(["clean"], mh), KeyModelMapping(["noisy", "clean"], mh)]
    )
  # The Dataflow page's own example lists a key twice in one mapping; Beam's error then
  # speaks of "multiple model handlers" (docs/beam_findings.md): the kit's names the fix.
  with pytest.raises(
    SetupError, match=r"'noisy' is listed twice in KeyModelMapping #1: list each key once"
  ):
    FixedBatchKeyedModelHandler(
      [KeyModelMapping(["clean"], mh), KeyModelMapping(["noisy", "noisy"], mh)]
    )


@pytest.mark.parametrize(
  "hint,message", [(0, ">= 1"), (-2, ">= 1"), (1.5, "whole number"), ("2", "whole number")]
)
def test_bad_hints_are_refused(hint, message):
  with pytest.raises(SetupError, match=message):
    keyed_handler(model_handlers(2), hint=hint)


def test_a_hint_above_the_number_of_models_only_warns():
  with pytest.warns(UserWarning, match="changes nothing"):
    handler = keyed_handler(model_handlers(2), hint=5)
  assert handler.keys == ["clean", "noisy"]


def test_mismatched_input_shape_is_found_before_running():
  with pytest.raises(SetupError, match=r"shape \(28, 28\) do not fit MLPClassifier.*Reshape"):
    check_input_shape(models.load_model("general"), (28, 28))
  check_input_shape(models.load_model("general"), (64,))  # the right shape passes


def test_unknown_keys_and_bad_tensors_become_dead_letters_and_the_rest_is_served():
  good = [("clean", i) for i in range(10)] + [("noisy", i) for i in range(5)]
  unknown = [("thermal", 1), ("thermal", 2)]
  bad_shape = [("clean", torch.zeros(28, 28))]
  with Tracer() as tracer:
    with beam.Pipeline() as p:
      examples = p | beam.Create(good + unknown + bad_shape, reshuffle=False)
      handler = keyed_handler(model_handlers(2), hint=1, batch_size=4)
      predictions, dead = keyed_inference_with_dead_letters(
        examples, handler, log_dir=tracer.log_dir
      )
      _ = predictions | beam.ParDo(CountElements("elements_out", tracer.log_dir))
      assert_that(
        predictions | beam.Map(lambda kv: kv[0]), equal_to([k for k, _ in good]), label="served"
      )
      reasons = dead | beam.Map(
        lambda d: (d.key, d.reason.split(" (known")[0].split(" does not")[0])
      )
      assert_that(
        reasons,
        equal_to(
          [("thermal", "no model for key 'thermal'")] * 2 + [("clean", "example shape (28, 28)")]
        ),
        label="dead",
      )
  counts = RunReport.of(tracer).counts
  assert counts["elements_out"] + counts["dead_letters"] == len(good + unknown + bad_shape)
  assert counts["dead_letters"] == 3


@pytest.mark.parametrize("group", ["none", "gbk", "batches"])
def test_a_tensor_the_model_refuses_is_a_dead_letter_and_its_batch_mates_are_served(group):
  # float64 passes every check before inference (64 numbers, known key) but the float32
  # model raises on it: Beam fails the whole batch, the kit retries it element by element.
  good = [("clean", i) for i in range(10)] + [("noisy", i) for i in range(6)]
  refused = [
    ("clean", torch.zeros(64, dtype=torch.float64)),
    ("noisy", torch.ones(64, dtype=torch.float64)),
  ]
  with Tracer() as tracer:
    with beam.Pipeline() as p:
      examples = p | beam.Create(
        good[:3] + refused[:1] + good[3:12] + refused[1:] + good[12:], reshuffle=False
      )
      handler = keyed_handler(model_handlers(2), hint=2, batch_size=4)
      predictions, dead = keyed_inference_with_dead_letters(
        examples, handler, group, log_dir=tracer.log_dir
      )
      _ = predictions | beam.ParDo(CountElements("elements_out", tracer.log_dir))
      assert_that(
        predictions | beam.Map(lambda kv: kv[0]), equal_to([k for k, _ in good]), label="served"
      )
      dtypes = dead | beam.Map(
        lambda d: (d.key, str(d.element.dtype), d.reason.startswith("the model refused it:"))
      )
      assert_that(
        dtypes,
        equal_to([("clean", "torch.float64", True), ("noisy", "torch.float64", True)]),
        label="dead",
      )
  counts = RunReport.of(tracer).counts
  assert (counts["elements_out"], counts["dead_letters"]) == (len(good), len(refused))


def test_batch_mates_of_a_refused_tensor_get_the_same_predictions_as_without_it():
  from mmkit import data

  x, _ = data.cohort("clean", "test")
  with torch.no_grad():
    expected = [
      (i, int(label))
      for i, label in enumerate(
        models.load_model("specialist_clean")(torch.tensor(x[:7])).argmax(1)
      )
    ]
  elements = [("clean", i) for i in range(7)] + [("clean", torch.zeros(64, dtype=torch.float64))]
  with beam.Pipeline() as p:
    indexed = p | beam.Create(list(enumerate(elements)), reshuffle=False)
    predictions, _ = keyed_inference_with_dead_letters(
      indexed | beam.Map(lambda ie: (ie[1][0], ie[1][1])),
      keyed_handler(model_handlers(1), batch_size=8),
    )
    # The batch of 8 fails as a whole; each of the 7 good digits is then served on its own.
    rows = predictions | beam.Map(
      lambda kv: (kv[1].example.numpy().tobytes(), int(kv[1].inference.argmax()))
    )
    by_row = {torch.tensor(x[i]).numpy().tobytes(): i for i in range(7)}
    assert_that(rows | beam.Map(lambda r: (by_row[r[0]], r[1])), equal_to(expected))


def test_a_sequence_whose_second_model_cannot_take_the_first_ones_output_is_refused_up_front():
  from mmkit.validate import check_sequence

  check_sequence(["denoiser", "ab_mlp"])  # 64 pixels -> 64 pixels -> 10 scores: fits
  with pytest.raises(
    SetupError, match=r"the output of ab_mlp \(shape \(10,\)\) does not fit ab_cnn.*Put a model"
  ):
    check_sequence(["ab_mlp", "ab_cnn"])
  with pytest.raises(
    SetupError, match=r"examples of shape \(28, 28\) do not fit denoiser.*Reshape the inputs"
  ):
    check_sequence(["denoiser", "ab_mlp"], example_shape=(28, 28))


def test_a_batch_that_fails_outside_the_model_becomes_dead_letters_with_beams_error():
  from apache_beam.ml.inference.base import ModelHandler, RunInference

  from mmkit.core.keyed import failed_batch

  class Broken(ModelHandler):
    def load_model(self):
      return None

    def run_inference(self, batch, model, inference_args=None):
      raise ValueError("disk on fire")

  with beam.Pipeline() as p:
    _, failed = (
      p
      | beam.Create([("clean", 1), ("noisy", 2)])
      | RunInference(Broken()).with_exception_handling()
    )
    dead = failed.failed_inferences | beam.FlatMap(failed_batch)
    assert_that(
      dead | beam.Map(tuple),
      equal_to(
        [
          ("clean", 1, "its batch failed: ValueError('disk on fire')"),
          ("noisy", 2, "its batch failed: ValueError('disk on fire')"),
        ]
      ),
    )


def test_a_handler_that_cannot_retry_alone_is_refused_with_the_fix():
  from mmkit.core.keyed import InferOrDeadLetter
  from mmkit.patterns import keyed_by_id

  with pytest.raises(TypeError, match="FixedBatchKeyedModelHandler.*keyed_handler"):
    InferOrDeadLetter(keyed_by_id("general"))


def test_the_handler_alone_still_fails_a_batch_as_beam_does():
  # Serving alone is switched on only for InferOrDeadLetter's copy: a user's plain
  # RunInference(keyed_handler(...)) never sees a Refused in place of a prediction.
  handler = keyed_handler(model_handlers(1))
  handler.override_metrics(handler.get_metrics_namespace())  # as RunInference does first
  model = handler.load_model()
  with pytest.raises(RuntimeError, match="dtype"):
    handler.run_inference([("clean", torch.zeros(64, dtype=torch.float64))], model)
  refused = handler.serving_alone_on_failure().run_inference(
    [("clean", torch.zeros(64)), ("clean", torch.zeros(64, dtype=torch.float64))], model
  )
  assert [type(value).__name__ for _, value in refused] == ["PredictionResult", "Refused"]
  release_resident_models()
