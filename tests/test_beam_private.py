"""Beam's private names are read in one module, which fails loudly when Beam changes them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmkit.core import beam_private

# The private names the kit reads (issue 24's list): only beam_private.py may spell them.
PRIVATE_NAMES = (
  "_ModelHandlerManager",
  "_tag_map",
  "_proxy_map",
  "_max_models",
  "_mh_map",
  "_process_level_singleton_manager",
  "initialied",
  "_underlying_result",
  "_state_dict_path",
  "_model_uri",
  "_env_vars",
  "_enter_text",
  "_tracked_user_pipelines",
  "_max_models_per_worker_hint",
  "_single_model",
  "_id_to_mh_map",
)


def test_beams_private_names_appear_only_in_the_private_access_module():
  package = Path(beam_private.__file__).parent.parent
  found = [
    f"{path.relative_to(package)}: {name}"
    for path in package.rglob("*.py")
    if path.name != "beam_private.py"
    for name in PRIVATE_NAMES
    if re.search(rf"\b{name}\b", path.read_text())
  ]
  assert not found, found


def test_every_accessor_reads_a_name_this_beam_has():
  manager = beam_private.KeyedModelManager({})
  assert beam_private.manager_lru(manager) == {} and beam_private.manager_servers(manager) == {}
  assert beam_private.manager_handlers(manager) == {} and beam_private.manager_cap(manager) is None
  assert isinstance(beam_private.shared_entries(), dict)


def test_a_missing_private_name_raises_naming_it_and_the_beam_version():
  class Manager:  # stands in for a Beam whose manager renamed its LRU
    pass

  with pytest.raises(beam_private.BeamInternalsChanged) as raised:
    beam_private.manager_lru(Manager())
  message = str(raised.value)
  assert "Manager._tag_map" in message and beam_private.BEAM_VERSION in message
  assert "test_beam_findings.py" in message
  assert isinstance(raised.value, AttributeError)


def test_an_untested_beam_version_warns_once_naming_what_to_recheck():
  script = (
    "import warnings, apache_beam\n"
    "apache_beam.__version__ = '2.99.0'\n"
    "with warnings.catch_warnings(record=True) as seen:\n"
    "  warnings.simplefilter('always')\n"
    "  import mmkit.core.beam_private\n"
    "  import mmkit.core.keyed\n"
    "print(len(seen)); print(seen[0].message)\n"
  )
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  count, message = done.stdout.strip().splitlines()[-2:]
  assert count == "1"
  assert "2.99.0" in message and "tests/test_beam_findings.py" in message


def test_interactive_beams_dot_lookup_prints_nothing_and_decides_the_same(capfd, monkeypatch):
  import shutil

  from apache_beam.runners.interactive.display import pipeline_graph_renderer as renderers

  monkeypatch.setattr(renderers, "get_renderer", renderers.get_renderer)  # undone after
  beam_private.quiet_dot_lookup()
  beam_private.quiet_dot_lookup()  # idempotent: wraps once
  assert renderers.get_renderer.mmkit_quiet
  renderer = renderers.get_renderer()
  expected = "graph" if shutil.which("dot") else "text"
  assert type(renderer).option() == expected
  assert capfd.readouterr().out == ""  # Beam's own lookup ran `which dot`, which prints


def _remembered(monkeypatch, owner, name: str, remember: str):
  """Puts `beam_private.<remember>` over Beam's `owner.<name>` (called twice, as a re-run setup
  cell would; the test undoes it); returns Beam's own function and the last argument of each
  call that still reached it."""
  plain = getattr(owner, name)
  monkeypatch.setattr(owner, name, plain)  # undone after the test
  asked = []
  monkeypatch.setattr(
    beam_private, "_private", lambda _, __: lambda *args: asked.append(args[-1]) or plain(*args)
  )
  getattr(beam_private, remember)()
  getattr(beam_private, remember)()
  return plain, asked


def test_dofn_specs_are_inspected_once_per_dofn_and_answer_as_beams_do(monkeypatch):
  import apache_beam as beam
  from apache_beam.coders import VarIntCoder
  from apache_beam.transforms import userstate
  from apache_beam.transforms.timeutil import TimeDomain

  class Stateful(beam.DoFn):
    COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())
    TICK = userstate.TimerSpec("tick", TimeDomain.WATERMARK)

    def process(self, kv, count=beam.DoFn.StateParam(COUNT), tick=beam.DoFn.TimerParam(TICK)):
      yield kv

    @userstate.on_timer(TICK)
    def on_tick(self):
      pass

  plain, asked = _remembered(monkeypatch, userstate, "get_dofn_specs", "remember_dofn_specs")
  dofn = Stateful()
  first = userstate.get_dofn_specs(dofn)
  assert first == plain(dofn) and first[0] and first[1]  # one state spec, one timer spec
  first[0].clear()  # a caller's copy: changing it changes nothing kept
  assert userstate.get_dofn_specs(dofn) == plain(dofn)
  assert asked == [dofn], "inspected once for two questions"
  other = Stateful()
  userstate.get_dofn_specs(other)
  assert asked == [dofn, other], "another object is inspected anew"


def test_function_arguments_are_inspected_once_per_function_and_class(monkeypatch):
  import apache_beam as beam
  from apache_beam.transforms import core

  plain, asked = _remembered(
    monkeypatch, core, "get_function_args_defaults", "remember_function_arguments"
  )

  class Scale(beam.DoFn):
    def process(self, x, factor=2):
      yield x * factor

  class Shift(Scale):  # the same function, bound to another class
    pass

  first = core.get_function_args_defaults(Scale().process)
  assert first == plain(Scale().process) == (["x", "factor"], [2])
  first[0].clear()  # a caller's copy: changing it changes nothing kept
  assert core.get_function_args_defaults(Scale().process) == (["x", "factor"], [2])
  assert len(asked) == 1, "two DoFn objects of one class: inspected once"
  core.get_function_args_defaults(Shift().process)
  assert len(asked) == 2, "bound to another class: inspected anew"

  class Slotted:  # no __weakref__ slot: nothing would tell when its id is free again
    __slots__ = ()

    def __call__(self, x):
      return x

  callable_object = Slotted()
  core.get_function_args_defaults(callable_object)
  core.get_function_args_defaults(callable_object)
  assert len(asked) == 4, "what cannot be weakly referenced is inspected each time"


def test_an_options_view_is_made_once_and_shares_the_values_of_its_source(monkeypatch):
  from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    StandardOptions,
  )

  _, made = _remembered(monkeypatch, PipelineOptions, "view_as", "remember_option_views")
  options = PipelineOptions(["--streaming", "--experiments=a"])
  standard = options.view_as(StandardOptions)
  assert standard.streaming is True and options.view_as(DebugOptions).experiments == ["a"]
  assert options.view_as(StandardOptions) is standard and len(made) == 2, "made once per class"
  standard.streaming = False  # set through one view: every view and the source see it
  assert options.view_as(StandardOptions).streaming is False
  assert options.get_all_options()["streaming"] is False
  other = PipelineOptions([])
  assert other.view_as(StandardOptions).streaming is False and len(made) == 3, "per object"
  options._all_options = dict(options._all_options)  # a new store: the kept view is stale
  assert options.view_as(StandardOptions) is not standard and len(made) == 4


def test_a_pipeline_collects_the_same_with_beams_answers_remembered(monkeypatch):
  import apache_beam as beam
  import apache_beam.runners.interactive.interactive_beam as ib
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.runners.interactive.interactive_runner import InteractiveRunner
  from apache_beam.transforms import core, userstate

  monkeypatch.setattr(userstate, "get_dofn_specs", userstate.get_dofn_specs)  # undone after
  monkeypatch.setattr(core, "get_function_args_defaults", core.get_function_args_defaults)
  monkeypatch.setattr(PipelineOptions, "view_as", PipelineOptions.view_as)
  beam_private.remember_dofn_specs()
  beam_private.remember_function_arguments()
  beam_private.remember_option_views()
  assert userstate.get_dofn_specs.mmkit_remembered
  assert core.get_function_args_defaults.mmkit_remembered
  p = beam.Pipeline(InteractiveRunner())
  out = p | beam.Create(range(8)) | beam.Map(lambda x: x * x)
  assert sorted(ib.collect(out, raw_records=True)) == [x * x for x in range(8)]
