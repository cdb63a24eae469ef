"""One pipeline, any runner: the kit's builders take plain PipelineOptions."""

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions

from mmkit.experiment import KeyedRun, keyed_pipeline, model_handlers

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
  assert pipeline.options.get_all_options()["max_num_workers"] == 4
  assert isinstance(pipeline, beam.Pipeline)
