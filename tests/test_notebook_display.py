"""mmkit.notebook: a widget that still shows a picture, claims, and the set-up of a kernel."""

import base64

import ipywidgets as widgets
import matplotlib.pyplot as plt


def test_one_output_carries_the_widget_and_a_png_of_the_figure(monkeypatch):
  import IPython.display

  from mmkit.notebook import display_with_picture

  shown = []
  monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
  fig, ax = plt.subplots()
  ax.plot([0, 1], [0, 1])
  display_with_picture(widgets.VBox([widgets.IntSlider()]), fig)
  [(bundle, raw)] = shown
  assert raw is True
  assert "application/vnd.jupyter.widget-view+json" in bundle
  assert bundle["text/plain"] == "A picture of the widget; run the notebook to use it."
  assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
  assert not plt.fignum_exists(fig.number), "the figure is closed, so it is not drawn twice"


def test_a_claim_prints_its_figures_and_fails_when_the_run_contradicts_it(capsys):
  import pytest

  from mmkit.notebook import ClaimFailed, claim

  claim("mapped loads are cheaper", 3.0 < 12.5, mmap_ms=3.0, copy_ms=12.5)
  assert capsys.readouterr().out == "holds: mapped loads are cheaper  (mmap_ms=3, copy_ms=12.5)\n"
  with pytest.raises(ClaimFailed, match="mapped loads are cheaper.*mmap_ms=30"):
    claim("mapped loads are cheaper", 30.0 < 12.5, mmap_ms=30.0, copy_ms=12.5)
  assert capsys.readouterr().out.startswith("FAILS: ")


SETUP_THEN_A_CYCLE = """
import gc, sys, weakref
from mmkit import notebook
notebook.setup()
frozen = gc.get_freeze_count()
assert 'apache_beam' in sys.modules and 'torch' in sys.modules, 'setup imports what it freezes'

class Model:  # a model made after setup, held only by a reference cycle, as Beam's can be
    pass
model = Model()
model.me = model
gone = weakref.ref(model)
del model

from mmkit.explorer import _young_objects_only
with _young_objects_only():  # a click of the explorer inside a set-up kernel
    pass
gc.collect()
print(frozen, gc.get_freeze_count(), gone() is None)
"""


def test_setup_freezes_the_imported_objects_and_later_cycles_are_still_collected():
  import subprocess
  import sys

  # A process of its own: freezing is for the whole interpreter, pytest's included.
  done = subprocess.run(
    [sys.executable, "-c", SETUP_THEN_A_CYCLE], capture_output=True, text=True, check=True
  )
  frozen, still_frozen, collected = done.stdout.split()
  assert int(frozen) > 100_000, "Beam's and torch's objects are out of the full collections"
  # (a frozen object whose last reference goes is still freed, so the count may fall a little)
  assert int(still_frozen) > 0.9 * int(frozen), "the explorer's click left them frozen"
  assert collected == "True", "a cycle made after setup is still freed by gc.collect"
