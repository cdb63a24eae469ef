"""Execute notebooks in place and commit-clean them: outputs kept, UI and editor metadata stripped.

    python tools/run_notebooks.py [notebooks/03_keyed_models.ipynb ...]   # default: all
    python tools/run_notebooks.py --clean-only [...]                       # clean, no run

Prints each notebook's wall time and the peak memory of the kernel process tree; fails
(exit 1) on the first cell error, leaving the notebook file untouched.
"""

from __future__ import annotations

import glob
import re
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
KEEP_METADATA = ("kernelspec", "language_info")
PROGRESS = re.compile(r"\d+%\|")


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  """Strips UI/editor metadata, so diffs show only content and outputs.

  Execution counts stay: after a fresh top-to-bottom run they are 1, 2, 3, ... (a reader sees
  the notebook ran in order), and nbval needs them to tell a run cell from an unrun one.
  """
  nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP_METADATA}
  for cell in nb.cells:
    cell.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags",)}
    if cell.cell_type == "code":
      cell.outputs = [out for out in cell.outputs if not _is_progress_bar(out)]
      if CHECKED not in cell.source:  # nbval compares a checked cell's outputs as displayed
        cell.outputs = [out for out in cell.outputs if not is_noise(out)]
      for out in cell.outputs:
        out.get("metadata", {}).pop("transient", None)
  return nb


CHECKED = "NBVAL_CHECK_OUTPUT"


def is_noise(output) -> bool:
  """Output a saved notebook shows as nothing or as noise: Interactive Beam's JavaScript (it loads
  jQuery and DataTables from CDNs, which GitHub never runs) and emptied HTML displays (the
  progress text `mmkit.notebook.progress_that_clears_itself` empties)."""
  data = output.get("data", {})
  emptied = "text/html" in data and not "".join(data["text/html"]).strip()
  return "application/javascript" in data or emptied


def _is_progress_bar(output) -> bool:
  """A tqdm bar shown as a widget: live while the cell runs, but saved as the text of its first
  state ("0%| | 0/5"), which a reader of the saved notebook would take for a stalled run."""
  data = output.get("data", {})
  text = "".join(data.get("text/plain", ""))
  return "application/vnd.jupyter.widget-view+json" in data and bool(PROGRESS.search(text))


def _tree_rss_mb() -> float:
  me = psutil.Process()
  total = 0
  for p in [me, *me.children(recursive=True)]:
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total / 2**20


def run(path: Path, timeout: int = 600) -> tuple[float, float]:
  """Executes one notebook in its folder; returns (seconds, peak MB of this process tree)."""
  nb = nbformat.read(path, as_version=4)
  peak, stop = [0.0], threading.Event()

  def watch():
    while not stop.is_set():
      peak[0] = max(peak[0], _tree_rss_mb())
      stop.wait(0.1)

  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  start = time.time()
  try:
    NotebookClient(
      nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
  finally:
    stop.set()
    watcher.join()
  nbformat.write(clean(nb), path)
  return time.time() - start, peak[0]


def main(argv: list[str]) -> int:
  if argv[:1] == ["--clean-only"]:  # no run: clean what is committed
    for path in _paths(argv[1:]):
      nbformat.write(clean(nbformat.read(path, as_version=4)), path)
    return 0
  paths = _paths(argv)
  total_start, worst = time.time(), 0.0
  for path in paths:
    seconds, peak = run(path)
    worst = max(worst, peak)
    print(f"{path.name:40} {seconds:6.1f} s  peak {peak:6.0f} MB", flush=True)
  print(f"{'all':40} {time.time() - total_start:6.1f} s  peak {worst:6.0f} MB")
  return 0


def _paths(argv: list[str]) -> list[Path]:
  return [Path(p) for p in argv] or sorted(
    Path(p) for p in glob.glob(str(ROOT / "notebooks" / "*.ipynb"))
  )


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
