"""mmkit.diagrams: the picture is Beam's graph of the pipeline, as a PNG, with the user's labels."""

import re
import shutil
import struct
import subprocess

import apache_beam as beam
import apache_beam.runners.interactive.interactive_beam as ib
import pytest
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.runners.interactive.interactive_runner import InteractiveRunner

from mmkit.diagrams import pipeline_dot, pipeline_picture

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NEEDS_DOT = pytest.mark.skipif(
  shutil.which("dot") is None, reason="needs Graphviz's `dot` (apt-get install graphviz)"
)


class _Echo(ModelHandler):
  """A model handler that is never run: these pipelines are drawn, not run."""

  def load_model(self):
    return None

  def run_inference(self, batch, model, inference_args=None):
    return batch


def _fork():
  """One source forked into two RunInference branches, built as the notebooks build them."""
  p = beam.Pipeline(InteractiveRunner())
  digits = p | "Digits" >> beam.Create([1, 2, 3])
  label_a = digits | "A: denoise" >> RunInference(_Echo()) | "LabelA" >> beam.Map(str)
  label_b = digits | "B alone" >> RunInference(_Echo())
  return p, digits, label_a, label_b


def test_a_fork_shows_both_branches_each_fed_by_the_shared_source():
  p, *_ = _fork()
  dot = pipeline_dot(p, title='The "fork"')
  for label in ["Digits", "A: denoise", "LabelA", "B alone"]:
    assert f'"{label}";' in dot, label
  # Nothing holds the PCollections (a test's locals are not watched): arrows between transforms.
  assert '"Digits" -> "A: denoise";' in dot and '"Digits" -> "B alone";' in dot
  assert '"A: denoise" -> "LabelA";' in dot
  assert 'label=""' not in dot  # no empty circles left
  assert dot.count("shape=point") == 2  # the two outputs no transform reads
  assert 'label="The \\"fork\\""' in dot and "rankdir=LR" in dot


def test_a_watched_variable_names_its_pcollection_and_a_throwaway_one_does_not():
  p, digits, label_a, label_b = _fork()
  watched = {"digits": digits, "_": label_a}  # as a notebook's globals are watched
  ib.watch(watched)
  try:
    dot = pipeline_dot(p)
  finally:
    watched.clear()  # Beam keeps a view of the dict: emptied, it watches nothing
  assert "digits [shape=ellipse" in dot
  assert '"Digits" -> digits;' in dot
  assert 'digits -> "A: denoise";' in dot and 'digits -> "B alone";' in dot
  assert "\n_ [shape=point" in dot and dot.count("shape=point") == 2  # a dot: no name drawn


def test_an_output_no_transform_reads_stays_a_dot_and_a_read_one_becomes_an_arrow():
  p = beam.Pipeline(InteractiveRunner())
  served, errors = (
    p
    | "Keys" >> beam.Create([1])
    | "RunInference" >> RunInference(_Echo()).with_exception_handling()
  )
  _ = served | "Score" >> beam.Map(str)
  dot = pipeline_dot(p)
  assert '"Keys" -> "RunInference";' in dot and '"RunInference" -> "Score";' in dot
  assert dot.count("shape=point") == 2  # Score's output, and the failed elements nobody reads


@pytest.fixture
def rendered(monkeypatch):
  """The DOT sources `dot` is given, in order."""
  sources = []
  run = subprocess.run

  def spy(command, **kwargs):
    sources.append(kwargs["input"].decode())
    return run(command, **kwargs)

  monkeypatch.setattr(subprocess, "run", spy)
  return sources


@NEEDS_DOT
def test_the_picture_is_a_png_of_that_dot_at_notebook_width(rendered):
  p, *_ = _fork()
  image = pipeline_picture(p, title="fork")
  assert set(rendered) == {pipeline_dot(p, title="fork")}  # laid out, then drawn: left to right
  png = image.data
  assert png.startswith(PNG_SIGNATURE)
  width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
  assert 200 < width <= 800 and 40 < height < width
  assert 2_000 < len(png) < 200_000
  sharper = pipeline_picture(p, title="fork", dpi=192).data
  assert struct.unpack(">I", sharper[16:20])[0] > 1.5 * width


@NEEDS_DOT
def test_a_pipeline_too_long_for_the_width_is_drawn_top_to_bottom_at_full_size(rendered):
  p = beam.Pipeline(InteractiveRunner())
  step = p | "Source" >> beam.Create([1])
  for n in range(12):
    step = step | f"Step number {n}" >> beam.Map(lambda x: x)
  png = pipeline_picture(p).data
  width, height = struct.unpack(">II", png[16:24])
  assert "rankdir=TB" in rendered[-1] and '"Step number 11";' in rendered[-1]
  assert height > 3 * width and width <= 800


def test_without_dot_the_error_names_graphviz(monkeypatch, tmp_path):
  monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
  p, *_ = _fork()
  with pytest.raises(RuntimeError, match="graphviz"):
    pipeline_picture(p)


def test_interactive_beams_cell_number_is_dropped_from_the_labels_drawn():
  p = beam.Pipeline()
  _ = p | "[4]: Ids" >> beam.Create([1]) | '[12]: Say "hi"' >> beam.Map(str)
  dot = pipeline_dot(p)
  assert '"[4]: Ids" [label="Ids"];' in dot  # the node keeps Beam's name: edges still match
  assert '"[12]: Say \\"hi\\"" [label="Say \\"hi\\""];' in dot
  assert '"[4]: Ids" -> "[12]: Say \\"hi\\"";' in dot


def test_pcollections_keep_distinct_names_when_beams_hashed_ones_collide(monkeypatch):
  import builtins

  # Beam names each unnamed PCollection pcoll<hash(id) % 10000>; string hashes change per
  # process, and two sometimes collide (the graph merged them). Here every hash collides.
  monkeypatch.setattr(builtins, "hash", lambda value: 7)
  p = beam.Pipeline(InteractiveRunner())
  values = p | "Step0" >> beam.Create([1])
  for step in range(1, 4):
    values = values | f"Step{step}" >> beam.Map(lambda x: x)
  arrows = set(re.findall(r'^("[^"]+") -> ("[^"]+");$', pipeline_dot(p), re.M))
  assert {(f'"Step{step - 1}"', f'"Step{step}"') for step in range(1, 4)} <= arrows
