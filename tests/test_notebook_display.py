"""mmkit.notebook.display_with_picture: a widget that still shows a picture where widgets can't."""

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
