"""Wall time and peak memory of executing every notebook (goal: 120 s and 3 GiB on 2 cores).

    python bench/notebooks.py

Runs copies in a temporary folder, so the committed notebooks are not touched.
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from run_notebooks import run  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def main():
  start, worst = time.time(), 0.0
  with tempfile.TemporaryDirectory() as scratch:
    for original in NOTEBOOKS:
      copy = Path(scratch) / original.name
      shutil.copy(original, copy)
      seconds, peak = run(copy)
      worst = max(worst, peak)
      print(f"{original.name:28} {seconds:6.1f} s   peak {peak:6.0f} MB", flush=True)
  print(
    f"{'all notebooks':28} {time.time() - start:6.1f} s   peak {worst:6.0f} MB"
    " (goal 120 s, 3072 MB)"
  )


if __name__ == "__main__":
  main()
