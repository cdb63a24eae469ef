"""Each core module works copied alone into a project: its own example runs without mmkit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mmkit.core

CORE = Path(mmkit.core.__file__).parent
# `import mmkit` fails in the copy's process, so the module must stand on its own: a module
# that still reached into the kit would fail, not silently use the installed one.
RUN_WITHOUT_MMKIT = (
  "import runpy, sys; sys.modules['mmkit'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"
)


def run_copied(module: str, tmp_path: Path) -> dict:
  """Copies `module`.py (and beam_private.py) into an empty dir, runs it, returns its result."""
  for name in {module, "beam_private"}:
    shutil.copy(CORE / f"{name}.py", tmp_path / f"{name}.py")
  done = subprocess.run(
    [sys.executable, "-c", RUN_WITHOUT_MMKIT, f"{module}.py"],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_core_module_has_an_example_and_says_how_to_copy_it():
  import ast

  for path in CORE.glob("*.py"):
    if path.name == "__init__.py":
      continue
    text = path.read_text()
    doc = ast.get_docstring(ast.parse(text))
    assert "Copy this file" in doc, path.name
    assert 'if __name__ == "__main__":' in text, path.name


def test_the_keyed_handler_serves_fixed_batches_and_a_failed_load_as_dead_letters(tmp_path):
  from mmkit.core.keyed import _example

  copied = run_copied("keyed", tmp_path)
  counters = copied["counters"]
  assert counters.pop("served") == 12  # keys a and b: 6 elements each
  ((reason, dead),) = counters.items()
  assert dead == 6 and "c.pt for key 'c' could not be loaded" in reason
  # Fixed batches make the swaps reproducible: the copy loads exactly as the kit's module does.
  assert copied["beam_loads"] == _example()["beam_loads"] > 2


def test_the_tracer_sees_every_swap(tmp_path):
  copied = run_copied("tracer", tmp_path)
  # Room for one model, keys alternating within each batch: more loads than models.
  assert copied["keys"] == ["a", "b"] and copied["loads"] > 2 and copied["processes"] == 1


def test_cleanup_frees_the_models_a_run_left_and_their_threads(tmp_path):
  copied = run_copied("cleanup", tmp_path)
  assert copied["freed"] == 2
  assert copied["threads_left_after_cleanup"] < copied["threads_left_by_the_run"]


def test_capacity_and_simulate_run_alone(tmp_path):
  from mmkit.core.capacity import recommend_hint
  from mmkit.core.simulate import model_accesses, simulate_lru

  assert run_copied("capacity", tmp_path)["hint"] == recommend_hint([64.0] * 8, 2048).hint
  simulated = run_copied("simulate", tmp_path)
  stream = ["a", "b", "c", "d"] * 8
  assert simulated["lru_loads"] == simulate_lru(model_accesses(stream, 2), 2).loads
  assert simulated["optimal_loads"] < simulated["lru_loads"]
  assert simulated["grouped_loads"] == 4


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_mmap_load_maps_the_weights_and_matches_beams_outputs(tmp_path):
  copied = run_copied("mmap_load", tmp_path)
  assert copied["same_outputs"] and copied["mapped_from"] == [copied["file"]]


def test_beam_private_turns_nagle_off_only_inside(tmp_path):
  import apache_beam

  copied = run_copied("beam_private", tmp_path)
  assert copied["beam"] == apache_beam.__version__
  assert copied["nodelay_inside"] and not copied["nodelay_after"]
