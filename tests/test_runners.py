"""One pipeline, any runner: the kit's builders take plain PipelineOptions."""

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions

from mmkit.experiment import keyed_pipeline, model_handlers
from mmkit.settings import KeyedRun

DATAFLOW = dict(
  runner="DataflowRunner",
  project="my-project",
  region="europe-west1",
  temp_location="gs://my-bucket/tmp",
  extra_packages=["dist/mmkit-0.1.0.tar.gz"],
)


def test_the_keyed_pipeline_builds_for_dataflow_without_submitting():
  options = PipelineOptions(**DATAFLOW)
  pipeline = keyed_pipeline(KeyedRun(models=3, hint=2, group="gbk"), model_handlers(3), options)
  assert type(pipeline.runner).__name__ == "DataflowRunner"
  proto = pipeline.to_runner_api()  # the portable graph a runner receives: no network involved
  names = {t.unique_name for t in proto.components.transforms.values()}
  assert {"Examples", "Infer/Serve/RunInference", "Infer/GroupByKey", "CountOut"} <= names
  cloud = pipeline.options.view_as(GoogleCloudOptions)
  assert (cloud.project, cloud.region) == ("my-project", "europe-west1")
  assert pipeline.options.view_as(SetupOptions).extra_packages == ["dist/mmkit-0.1.0.tar.gz"]


def test_options_round_trip_through_the_command_line_form():
  flags = [f"--{k}={v}" for k, v in DATAFLOW.items() if k != "extra_packages"]
  options = PipelineOptions(flags + ["--max_num_workers=4"])
  pipeline = keyed_pipeline(KeyedRun(models=2), model_handlers(2), options)
  given = pipeline.options.get_all_options()
  # The pipeline carries what the flags said, as the keyword form would have given it.
  keywords = PipelineOptions(**DATAFLOW, max_num_workers=4).get_all_options()
  for name in [*DATAFLOW, "max_num_workers"]:
    if name != "extra_packages":
      assert given[name] == keywords[name], name
  assert type(pipeline.runner).__name__ == "DataflowRunner" and given["max_num_workers"] == 4


def test_runner_names_map_to_the_directrunner_modes_and_an_unknown_one_is_named():
  from mmkit.core.cleanup import forget_interactive_pipeline
  from mmkit.pipelines import new_pipeline, runner_options

  one = runner_options("direct").get_all_options()
  two = runner_options("multiprocess", workers=3).get_all_options()
  assert (one["direct_running_mode"], one["direct_num_workers"]) == ("in_memory", 1)
  assert (two["direct_running_mode"], two["direct_num_workers"]) == ("multi_processing", 3)
  interactive = new_pipeline("interactive")
  assert type(interactive.runner).__name__ == "InteractiveRunner"
  forget_interactive_pipeline(interactive)
  with pytest.raises(ValueError, match="unknown runner 'spark'"):
    runner_options("spark")
