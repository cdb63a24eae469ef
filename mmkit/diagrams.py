"""Pictures of the pipeline a notebook runs, drawn from the pipeline itself (01, 02, 03, 04, 05).

A picture drawn by hand drifts from the code; one drawn from the pipeline object cannot. Beam's
own `PipelineGraph` writes the graph as Graphviz DOT (a box per transform, named as the code
names it; a circle per PCollection, named after the notebook variable that holds it) and
Graphviz's `dot` draws it as a PNG: an image output a saved notebook keeps and GitHub shows
(Beam's own `ib.show_graph` shows SVG inside HTML, and only in a live notebook). The pipeline is
drawn as built: nothing needs to run first, and a run does not change the picture.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  import apache_beam as beam
  from IPython.display import Image

__all__ = ["pipeline_dot", "pipeline_picture"]

_ID = r'("(?:[^"\\]|\\.)*"|\w+)'  # a DOT node id: "A: denoise" (a transform) or pcoll1234
# A PCollection no variable holds, or only a throwaway one (`_`, IPython's `_5`): no name shown.
_UNNAMED = re.compile(rf'^{_ID} \[label="", shape=circle\];\n', re.M)
_THROWAWAY = re.compile(r"^(_\w*) \[shape=circle\];$", re.M)
_EDGE = re.compile(rf"^{_ID} -> {_ID};\n", re.M)
# In a notebook, Interactive Beam prefixes each transform's label with its cell ("[4]: Ids").
_CELL_PREFIX = re.compile(r'^("\[\d+\]: ((?:[^"\\]|\\.)*)")(;| \[)', re.M)
_BLUE, _PALE = "#1f4e9c", "#eef2f9"
_NODE = {"shape": "box", "style": "rounded", "color": _BLUE, "fontcolor": _BLUE, "fillcolor": _PALE}
_LAYOUT = 'graph [rankdir=LR, ranksep=0.25, nodesep=0.15, size="8.3,30", fontname=Helvetica];\n'
_SIZES = "node [width=0.1, height=0.36];\nedge [arrowsize=0.6];\n"


def pipeline_dot(pipeline: beam.Pipeline, title: str | None = None) -> str:
  """Beam's DOT for `pipeline`, tidied so that `dot` draws it left to right, at most 8.3 in wide.

  Beam draws each PCollection no variable holds as an empty circle between two transforms: an
  arrow from the one to the other says the same in less width. One no transform reads (an output
  nobody named, such as RunInference's failed elements) stays, as a dot. Transform names stay
  as the code wrote them, without the cell number Interactive Beam puts before them ("[4]: ");
  only top-level transforms show (a composite is one box).
  """
  from apache_beam.runners.interactive.display.pipeline_graph import PipelineGraph

  from mmkit.core.beam_private import distinct_pcollection_names

  font = {"fontname": "Helvetica", "fontsize": "12"}
  with distinct_pcollection_names():  # Beam's hashed names collide now and then
    # render_option="text": otherwise Beam runs `which dot`, which prints its answer.
    dot = PipelineGraph(pipeline, {**_NODE, **font}, render_option="text").get_dot()
  dot = _THROWAWAY.sub(r'\1 [label="", shape=circle];', dot)
  dot = _CELL_PREFIX.sub(lambda m: f'{m[1]} [label="{m[2]}"' + ("];" if m[3] == ";" else ", "), dot)
  edges = _EDGE.findall(dot)
  unnamed = set(_UNNAMED.findall(dot))
  into = [dst for _, dst in edges if dst in unnamed]
  if len(into) > len(set(into)):  # what distinct_pcollection_names prevents
    raise RuntimeError("Two PCollections share one name in Beam's graph.")
  passed = unnamed & {src for src, _ in edges}
  producer = {dst: src for src, dst in edges if dst in passed}
  arrows = dict.fromkeys((producer.get(src, src), dst) for src, dst in edges if dst not in passed)
  point = f'[shape=point, style=filled, fillcolor="{_BLUE}"]'
  dot = _UNNAMED.sub(lambda m: "" if m[1] in passed else f"{m[1]} {point};\n", dot)
  dot = _EDGE.sub("", dot.replace("shape=circle", "shape=ellipse, style=filled, margin=0.03"))
  head = _LAYOUT + _SIZES
  if title is not None:
    head += f"graph [label={json.dumps(title, ensure_ascii=False)}, labelloc=t];\n"
  body = dot.rstrip().removesuffix("}").replace("{\n", "{\n" + head, 1)
  return body + "".join(f"{src} -> {dst};\n" for src, dst in arrows) + "}\n"


def pipeline_picture(pipeline: beam.Pipeline, title: str | None = None, dpi: int = 96) -> Image:
  """`pipeline` as a PNG image output, at most 800 px wide at 96 dpi.

  Left to right, unless that would shrink it below 3/4 of its size to fit: then top to bottom,
  so that long pipelines keep legible labels. Show it after building the pipeline and before
  running it: `diagrams.pipeline_picture(p)`.
  """
  from IPython.display import Image

  dot = shutil.which("dot")
  if dot is None:
    raise RuntimeError(
      "Graphviz's `dot` is not on PATH: install graphviz (`apt-get install graphviz` or "
      "`conda install graphviz`; Colab has it)."
    )

  def draw(source: str, *options: str) -> bytes:
    done = subprocess.run([dot, *options], input=source.encode(), capture_output=True, timeout=60)
    if done.returncode:
      raise RuntimeError(f"Graphviz's dot failed: {done.stderr.decode().strip()}")
    return done.stdout

  source = pipeline_dot(pipeline, title)
  scale = float(draw(source, "-Tplain").split()[1])  # "graph <scale> <width> <height>"
  if scale < 0.75:
    source = source.replace("rankdir=LR", "rankdir=TB", 1)
  return Image(data=draw(source, "-Tpng", f"-Gdpi={dpi}"), format="png")
