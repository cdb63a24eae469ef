"""Notebook set-up: quiet Beam's import-time warnings, readable plot defaults (every notebook)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

__all__ = [
  "setup",
  "freeze_imported_objects",
  "quiet_logging",
  "quiet_worker_processes",
  "progress_that_clears_itself",
  "display_with_picture",
  "ClaimFailed",
  "claim",
]


def quiet_logging() -> None:
  """Silences Beam's import-time warnings about optional cloud clients (sweeps too)."""
  logging.getLogger().setLevel(logging.ERROR)
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  warnings.filterwarnings("ignore", category=UserWarning, module="apache_beam")
  warnings.filterwarnings("ignore", category=DeprecationWarning)


def setup() -> None:
  """Call once at the top of a notebook, before importing Beam: quiet warnings, plot defaults,
  Beam's interactive costs removed (a `which dot` print; DoFns, signatures and options views
  made again at every collect), and the imported objects frozen out of the collector's walks."""
  quiet_logging()
  progress_that_clears_itself()
  from mmkit.core.beam_private import (
    quiet_dot_lookup,
    remember_dofn_specs,
    remember_function_arguments,
    remember_option_views,
  )

  quiet_dot_lookup()  # Beam's `which dot` would print /usr/bin/dot into collect cells
  remember_dofn_specs()  # each ib.collect re-inspected every DoFn ~30 times (finding 20)
  remember_function_arguments()  # and every DoFn method's signature, 5,900 times in all
  remember_option_views()  # and parsed the options again for each of ~1,800 views
  import matplotlib.pyplot as plt

  plt.rcParams.update(
    {
      "figure.figsize": (7, 3.5),
      "figure.dpi": 100,
      "axes.grid": True,
      "grid.alpha": 0.3,
      "axes.spines.top": False,
      "axes.spines.right": False,
    }
  )
  freeze_imported_objects()


def freeze_imported_objects() -> None:
  """Moves every object alive now (Beam, torch, pandas, matplotlib) out of the collector's reach.

  After the imports a kernel tracks about 400,000 objects, and every full collection walks
  them all: 0.24-0.29 s each here, paid by each run's cleanup (`return_freed_memory`) and by
  Python's own full collections. Imported modules live as long as the kernel, so freezing them
  loses nothing; what a run makes later is still collected (`gc.freeze`).
  """
  import gc

  gc.collect()  # garbage from the imports goes now, not never
  gc.freeze()


@contextlib.contextmanager
def quiet_worker_processes():
  """Worker processes started inside this block write their stderr to /dev/null, not the notebook.

  Beam's SDK workers print import-time warnings before any logging option applies.
  """
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def progress_that_clears_itself() -> None:
  """Beam's "Processing..." indicator, emptied when done instead of removed by JavaScript.

  The InteractiveRunner shows a spinner (HTML with a stylesheet from a CDN) while `ib.collect`
  runs and removes it with a JavaScript call, which a saved notebook never runs: on GitHub and
  in nbconvert every collect leaves a spinner and a `<script>`. Here the same text goes into a
  display that is updated to nothing when the work is done, so live readers see progress and
  saved outputs hold none.
  """
  from apache_beam.runners.interactive import utils

  from mmkit.core.beam_private import progress_text

  def enter(indicator):
    from IPython.display import HTML, display

    text = progress_text(indicator)
    indicator.mmkit_display = display(HTML(f"<i>{text}</i>"), display_id=True)

  def leave(indicator, *exc):
    from IPython.display import HTML

    if getattr(indicator, "mmkit_display", None) is not None:
      indicator.mmkit_display.update(HTML(""))

  utils.ProgressIndicator.__enter__ = enter
  utils.ProgressIndicator.__exit__ = leave


def display_with_picture(widget, fig, dpi: int = 80) -> None:
  """Shows `widget`, with `fig` as the picture wherever widgets cannot render (GitHub, nbconvert).

  One output carries both: Jupyter renders the widget, a renderer without widget state falls
  back to the PNG, and a text-only one reads one line, not the `VBox(children=...)` repr (04).
  """
  import base64
  import io

  import matplotlib.pyplot as plt
  from IPython.display import display

  bundle = dict(widget._repr_mimebundle_())
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  bundle["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
  # The plain text a text-only reader sees: what the picture is, not the widget's repr.
  bundle["text/plain"] = "A picture of the widget; run the notebook to use it."
  display(bundle, raw=True)


class ClaimFailed(AssertionError):
  """A sentence of a notebook that its own run contradicts."""


def claim(text: str, ok: bool, **figures) -> None:
  """Checks a sentence of the prose against the run: prints the figures and the verdict.

  The cell after a sentence that states a measured figure or compares runs calls this with
  the sentence, the condition that makes it true and the figures it rests on, so a re-run
  that contradicts the prose fails (nbval reports the error) instead of drifting (05, 07).
  """
  shown = ", ".join(
    f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
    for name, value in figures.items()
  )
  print(f"{'holds' if ok else 'FAILS'}: {text}" + (f"  ({shown})" if shown else ""))
  if not ok:
    raise ClaimFailed(f"the prose says {text!r}, but this run gives {shown or 'otherwise'}")
