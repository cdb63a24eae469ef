"""mmkit.beam_metrics: one reader of Beam's keyed-model metrics, for counts and for the table."""

from mmkit.beam_metrics import ALL, beam_load_counts, keyed_metrics_frame, keyed_model_metrics
from mmkit.core.cleanup import clean_up
from mmkit.experiment import keyed_pipeline, model_handlers
from mmkit.settings import KeyedRun


def test_load_counts_and_the_table_read_the_same_metrics_of_a_run():
  # 3 models cycled with room for 1, one element a batch: every element loads its model.
  run = KeyedRun(models=3, hint=1, elements=12, stream="cycle", batch_size=1)
  result = keyed_pipeline(run, model_handlers(3)).run()
  result.wait_until_finish()
  clean_up()
  metrics = keyed_model_metrics(result)
  loads = beam_load_counts(result)
  frame = keyed_metrics_frame(result)
  assert loads == {ALL: 12, "clean": 4, "noisy": 4, "rotated": 4}
  assert metrics[ALL]["num_inferences"] == 12
  assert frame.loc["(all)", "load_model_latency_milli_secs (count)"] == 12
  assert list(frame.loc[["clean", "noisy", "rotated"], "num_inferences"]) == [4, 4, 4]


def test_a_result_without_metrics_reads_as_none():
  class NoMetrics:
    def metrics(self):
      raise NotImplementedError

  assert keyed_model_metrics(None) is None and beam_load_counts(NoMetrics()) is None
