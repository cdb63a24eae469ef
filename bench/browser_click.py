"""Explorer click time in a real browser: Run pressed until the new status shows (goal: 1 s median).

    python bench/browser_click.py [--clicks 7] [--variants default,interactive,hint=2]

Serves one small notebook per variant with Voila on 127.0.0.1, opens each in Debian's chromium
(Playwright), and presses Run in turn on each page, so the variants share the machine's load.
The time is taken in the page (performance.now() from the click to the status's final text),
so it includes the kernel round trip and the figure sent to the page. The first click of each
page warms imports and the synthetic models and is not counted. Needs the `browser` extra and
`apt-get install -y chromium`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
from playwright.sync_api import sync_playwright

VARIANTS = {  # name: explorer() settings (mmkit.explorer.DEFAULTS otherwise)
  "default": {},
  "interactive": {"runner": "interactive"},
  "hint=2": {"hint": 2},  # 10 loads instead of 4: the trade between the lesson and the click
  "model_mb=8": {"model_mb": 8.0},  # fast loads, but memory steps lost in the heap's noise
  "no-progress": {"progress": False},
}

CLICK_JS = """() => new Promise(resolve => {
  const status = document.querySelector('.widget-html');
  const button = [...document.querySelectorAll('button.widget-button')]
    .find(b => b.textContent.includes('Run'));
  let running = false;
  const start = performance.now();
  const seen = new MutationObserver(() => {
    const text = status.textContent;
    running = running || text.includes('running');
    if (running && text.includes('loads,') && !text.includes('running')) {
      seen.disconnect();
      resolve({ms: performance.now() - start, status: text});
    }
  });
  seen.observe(status, {subtree: true, childList: true, characterData: true});
  button.click();
})"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _notebook(settings: dict) -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.cells = [
    nbformat.v4.new_code_cell(
      "from mmkit import notebook\nnotebook.setup()\nimport dataclasses\n"
      "from mmkit.explorer import DEFAULTS, explorer\n"
      f"settings = {settings!r}\nprogress = settings.pop('progress', True)\n"
      "explorer(dataclasses.replace(DEFAULTS, **settings), progress=progress)"
    )
  ]
  nb.metadata["kernelspec"] = {
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
    "name": "python3",
  }
  return nb


def _serve(path: Path) -> tuple[subprocess.Popen, str]:
  port = _free_port()
  log = open(path.with_suffix(".log"), "w")
  server = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "voila",
      "--no-browser",
      f"--port={port}",
      "--Voila.ip=127.0.0.1",
      str(path),
    ],
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 120
  while time.time() < deadline:
    try:
      urllib.request.urlopen(f"{url}/mmkit-not-a-page", timeout=5)
    except urllib.error.HTTPError:
      return server, url  # answering
    except OSError:
      time.sleep(0.5)
  raise TimeoutError(f"voila did not start: {path.with_suffix('.log').read_text()[-2000:]}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clicks", type=int, default=7)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  args = parser.parse_args()
  names = list(dict.fromkeys(args.variants.split(",")))  # a name twice would leak a server
  folder = Path(tempfile.mkdtemp(prefix="mmkit-bench-"))
  servers, pages = {}, {}
  times, runs = {name: [] for name in names}, {name: [] for name in names}
  try:
    with sync_playwright() as p:
      browser = p.chromium.launch(
        executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"]
      )
      for i, name in enumerate(names):
        path = folder / f"variant{i}.ipynb"
        nbformat.write(_notebook(VARIANTS[name]), path)
        servers[name], url = _serve(path)
        pages[name] = browser.new_page(viewport={"width": 1280, "height": 1000})
        pages[name].goto(url, timeout=180_000)
        pages[name].wait_for_selector(".widget-slider", timeout=180_000)
        pages[name].evaluate(CLICK_JS)  # warm-up click: imports, synthetic models
      for _ in range(args.clicks):
        for name in names:  # interleaved: every variant sees the same background load
          click = pages[name].evaluate(CLICK_JS)
          times[name].append(click["ms"] / 1000)
          runs[name].append(float(re.search(r"([0-9.]+) s$", click["status"].strip()).group(1)))
      browser.close()
  finally:
    for server in servers.values():
      server.terminate()
      server.wait()
    shutil.rmtree(folder, ignore_errors=True)
  load = os.getloadavg()[0]
  print(
    f"explorer click in chromium (Voila), {args.clicks} clicks per variant, interleaved; "
    f"load average {load:.1f} on {os.cpu_count()} cores:"
  )
  for name in names:
    ts = times[name]
    print(
      f"  {name:24} click median {statistics.median(ts):.2f} s "
      f"(min {min(ts):.2f}, max {max(ts):.2f}; "
      f"goal <= 1 s), of which the traced run {statistics.median(runs[name]):.2f} s  "
      f"{json.dumps([round(t, 2) for t in ts])}"
    )


if __name__ == "__main__":
  main()
