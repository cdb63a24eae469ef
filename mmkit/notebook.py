"""Notebook set-up: quiet Beam's import-time warnings, readable plot defaults (every notebook)."""
from __future__ import annotations

import logging
import warnings


def quiet_logging() -> None:
  """Silences Beam's import-time warnings about optional cloud clients (also used in sweep workers)."""
  logging.getLogger().setLevel(logging.ERROR)
  logging.getLogger("apache_beam").setLevel(logging.ERROR)
  warnings.filterwarnings("ignore", category=UserWarning, module="apache_beam")
  warnings.filterwarnings("ignore", category=DeprecationWarning)


def setup() -> None:
  """Call once at the top of a notebook, before importing Beam."""
  quiet_logging()
  import matplotlib.pyplot as plt
  plt.rcParams.update({"figure.figsize": (7, 3.5), "figure.dpi": 100, "axes.grid": True,
                       "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
