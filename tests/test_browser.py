"""The explorer in a real browser: JupyterLab and the Voila page, driven through Debian's chromium.

A copy of notebooks/explorer_app.ipynb is served from a temporary folder (JupyterLab's autosave
rewrites the file it opens); screenshots go to pytest's temporary folder. CI (`.ci/run`)
installs what this needs; elsewhere a missing piece skips it with what to install.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "explorer_app.ipynb"
CHROMIUM = shutil.which("chromium")
_MISSING = [
  what
  for what, ok in (
    ("chromium (apt-get install -y chromium)", CHROMIUM),
    (
      "playwright, jupyterlab, voila (pip install -e '.[browser]')",
      all(importlib.util.find_spec(m) for m in ("playwright", "jupyterlab", "voila")),
    ),
  )
  if not ok
]
if _MISSING:
  if os.environ.get("CI"):  # CI installs both (.ci/run): there a missing piece is a failure
    raise RuntimeError(f"browser test needs: {'; '.join(_MISSING)}")
  pytest.skip(f"browser test needs: {'; '.join(_MISSING)}", allow_module_level=True)

from playwright.sync_api import Page, sync_playwright  # noqa: E402

STATUS = ".widget-html"
# Offline, the Colab badge's image cannot be fetched; nothing else may fail.
ALLOWED_CONSOLE_ERROR = "net::ERR_NAME_NOT_RESOLVED"
SLOW = 120_000  # ms: a busy 2-core machine starts a kernel and runs Beam slowly


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_for_http(url: str, server: subprocess.Popen, log: Path, seconds: float = 120) -> None:
  deadline = time.time() + seconds
  while time.time() < deadline:
    if server.poll() is not None:
      raise RuntimeError(f"server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
    try:
      with urllib.request.urlopen(url, timeout=5):
        return
    except urllib.error.HTTPError:
      return  # answering, even "not found": the server is up
    except OSError:
      time.sleep(0.5)
  raise TimeoutError(f"{url} did not answer in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def _start(cmd: list[str], folder: Path, name: str) -> tuple[subprocess.Popen, Path]:
  log = folder / f"{name}.log"
  env = dict(os.environ)
  # The user's JupyterLab settings and workspaces stay out of it (and are not written to).
  for var, sub in (
    ("JUPYTER_CONFIG_DIR", "config"),
    ("JUPYTER_RUNTIME_DIR", "runtime"),
    ("JUPYTERLAB_SETTINGS_DIR", "settings"),
    ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
  ):
    env[var] = str(folder / "jupyter" / sub)
  # No "official Jupyter news?" pop-up over the figure (nor a fetch of the news offline).
  notification = folder / "jupyter" / "settings" / "@jupyterlab" / "apputils-extension"
  notification.mkdir(parents=True, exist_ok=True)
  (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
  with open(log, "w") as out:
    server = subprocess.Popen(cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
  return server, log


def _stop(server: subprocess.Popen) -> None:
  server.terminate()
  try:
    server.wait(timeout=20)
  except subprocess.TimeoutExpired:
    server.kill()
    server.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """A folder with a copy of the explorer notebook; screenshots go to its `shots`."""
  folder = tmp_path_factory.mktemp("browser")
  shutil.copy(ROOT / "notebooks" / NOTEBOOK, folder / NOTEBOOK)
  (folder / "shots").mkdir()
  return folder


@pytest.fixture(scope="module")
def browser():
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    yield browser
    browser.close()


def _page(browser, errors: list[str]) -> Page:
  page = browser.new_page(viewport={"width": 1280, "height": 1000})
  page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
  page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
  return page


def _status(page: Page) -> str:
  return page.locator(STATUS).first.inner_text()


def _figure_src(page: Page) -> str:
  return page.locator(".widget-output img").first.get_attribute("src")


def _run_and_wait(page: Page, shots: Path, name: str) -> tuple[str, str]:
  """Presses Run; sees the progress while it goes; returns (status, figure src) when done."""
  before = _status(page)
  page.locator("button.widget-button", has_text="Run").click()
  page.wait_for_function(  # progress: loads and elements while the run goes
    f"() => document.querySelector('{STATUS}').textContent.includes('running:')",
    polling="raf",
    timeout=SLOW,
  )
  page.screenshot(path=shots / f"{name}-running.png")
  page.wait_for_function(
    f"""(before) => {{
      const text = document.querySelector('{STATUS}').textContent;
      return text !== before && text.includes('loads,') && !text.includes('running')
        && document.querySelector('.widget-output img') !== null;
    }}""",
    arg=before,
    timeout=SLOW,
  )
  page.screenshot(path=shots / f"{name}-done.png")
  assert "failed" not in _status(page)
  return _status(page), _figure_src(page)


def _hint_to(page: Page, value: int) -> None:
  """Moves the hint slider with the keyboard, as a reader would, to `value`."""
  handle = page.locator(".widget-slider .noUi-handle").first
  handle.focus()
  current = int(page.locator(".widget-slider .widget-readout").first.inner_text())
  for _ in range(abs(value - current)):
    handle.press("ArrowRight" if value > current else "ArrowLeft")
  page.wait_for_function(
    "(v) => document.querySelector('.widget-slider .widget-readout').textContent.trim() === v",
    arg=str(value),
  )


def _assert_clean_console(errors: list[str]) -> None:
  unexpected = [e for e in errors if ALLOWED_CONSOLE_ERROR not in e]
  assert not unexpected, f"browser console errors: {unexpected}"


def test_explorer_in_jupyterlab(served, browser):
  port, token = _free_port(), secrets.token_hex(16)
  cmd = [
    sys.executable,
    "-m",
    "jupyterlab",
    "--no-browser",
    f"--port={port}",
    "--ServerApp.ip=127.0.0.1",
    f"--IdentityProvider.token={token}",
    f"--ServerApp.root_dir={served}",
  ]
  if os.geteuid() == 0:
    cmd.append("--allow-root")  # JupyterLab refuses root otherwise
  server, log = _start(cmd, served, "jupyterlab")
  errors: list[str] = []
  try:
    base = f"http://127.0.0.1:{port}"
    _wait_for_http(f"{base}/api/status?token={token}", server, log)
    page = _page(browser, errors)
    page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=SLOW)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=SLOW)
    # JupyterLab rewrites the kernel's metadata once the kernel answers: a notebook with the old
    # display name ("Python 3") showed modified 0.6 s after the kernel was idle. Watch for 5 s.
    for _ in range(20):
      dirty = page.locator(".lm-TabBar-tab.jp-mod-dirty").count()
      assert dirty == 0, "opening marked the notebook modified"
      page.wait_for_timeout(250)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_selector(".widget-slider", timeout=SLOW)
    shots = served / "shots"
    page.screenshot(path=shots / "lab-explorer.png")
    first_status, first_src = _run_and_wait(page, shots, "lab-default")
    _hint_to(page, 2)  # from the default (one hint per model): fewer models kept, more loads
    second_status, second_src = _run_and_wait(page, shots, "lab-hint2")
    assert second_status != first_status, "the status did not change with the hint"
    assert second_src != first_src, "the figure was not redrawn"
    page.close()
  finally:
    _stop(server)
  _assert_clean_console(errors)


def test_explorer_as_a_voila_page(served, browser):
  port = _free_port()
  cmd = [
    sys.executable,
    "-m",
    "voila",
    "--no-browser",
    f"--port={port}",
    "--Voila.ip=127.0.0.1",
    str(served / NOTEBOOK),
  ]
  server, log = _start(cmd, served, "voila")
  errors: list[str] = []
  try:
    base = f"http://127.0.0.1:{port}"
    _wait_for_http(f"{base}/mmkit-not-a-page", server, log)
    page = _page(browser, errors)
    page.goto(base, timeout=SLOW)
    page.wait_for_selector(".widget-slider", timeout=SLOW)
    assert page.locator(".jp-InputArea-editor").count() == 0, "Voila shows no code"
    status, src = _run_and_wait(page, served / "shots", "voila")
    assert "loads," in status and src
    page.close()
  finally:
    _stop(server)
  _assert_clean_console(errors)
