"""Installing the kit into other people's environments: Colab's cell, and a torch already there."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebook_header  # noqa: E402

# Not the version the kit is tested with (constraints.txt): what a Colab or a user might have.
OTHER_TORCH = "2.6.0"


def _pip_report(tmp_path: Path, installed_torch: str) -> dict:
  """pip's dry-run report of installing the kit into a venv that already holds that torch."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  purelib = next((venv / "lib").glob("python3*/site-packages"))
  # A torch as pip sees it (its metadata), without copying hundreds of MB of a real one.
  dist_info = purelib / f"torch-{installed_torch}.dist-info"
  dist_info.mkdir()
  (dist_info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: torch\nVersion: {installed_torch}\n"
  )
  (dist_info / "INSTALLER").write_text("pip\n")
  (dist_info / "RECORD").write_text("")
  # Everything else the kit needs is this suite's environment, after the venv's own
  # site-packages: offline, pip has nothing to fetch unless it wants to replace torch.
  (purelib / "suite.pth").write_text("\n".join(site.getsitepackages()) + "\n")
  src = tmp_path / "src"
  (src / "mmkit").mkdir(parents=True)
  shutil.copy(ROOT / "pyproject.toml", src)
  shutil.copy(ROOT / "README.md", src)
  (src / "mmkit" / "__init__.py").write_text("")
  env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
  env["PIP_CONFIG_FILE"] = os.devnull  # no machine-wide find-links or indexes: offline, always
  report = tmp_path / "report.json"
  result = subprocess.run(
    [
      str(venv / "bin" / "python"),
      "-m",
      "pip",
      "install",
      "--dry-run",
      "--quiet",
      "--no-index",
      "--no-build-isolation",
      "--disable-pip-version-check",
      "--report",
      str(report),
      str(src),
    ],
    capture_output=True,
    text=True,
    env=env,
    cwd=tmp_path,
    timeout=120,
  )
  assert result.returncode == 0, (
    f"pip would not install the kit next to torch {installed_torch}:\n{result.stderr[-2000:]}"
  )
  return json.loads(report.read_text())


def test_install_keeps_an_installed_torch(tmp_path):
  report = _pip_report(tmp_path, OTHER_TORCH)
  to_install = {item["metadata"]["name"].lower() for item in report["install"]}
  assert to_install == {"mmkit"}, f"installing the kit would also install {to_install - {'mmkit'}}"


def test_constraints_pin_every_requirement():
  """constraints.txt holds an exact version for each package pyproject.toml names."""
  tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  names = {Requirement(r).name.lower() for r in project["dependencies"]}
  for extra in project["optional-dependencies"].values():
    names |= {Requirement(r).name.lower() for r in extra} - {"mmkit"}
  pins = {}
  for line in (ROOT / "constraints.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      req = Requirement(line)
      pins[req.name.lower().replace("_", "-")] = str(req.specifier)
  assert names - set(pins) == set(), "constraints.txt lacks these"
  assert pins["torch"] == "==2.13.0" and pins["apache-beam"] == "==2.77.0"


def test_notebook_headers_are_current():
  """Every notebook's badge, install cell and kernelspec are what tools/notebook_header.py makes."""
  for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
    text = path.read_text()
    after = nbformat.writes(notebook_header.update(nbformat.reads(text, as_version=4), path.name))
    assert after + "\n" == text, f"{path.name}: run python tools/notebook_header.py"


class _Shell:
  """Records the shell commands and magics a cell runs instead of running them."""

  def __init__(self, clone_into: Path):
    self.calls: list[str] = []
    self.clone_into = clone_into

  def system(self, cmd: str) -> None:
    self.calls.append(cmd)
    if cmd.startswith("git clone"):
      if self.clone_into.exists():  # what made the old `!git clone` fail on a second run
        raise RuntimeError("destination path already exists")
      self.clone_into.mkdir()

  def run_line_magic(self, name: str, line: str) -> None:
    self.calls.append(f"%{name} {line}")


def _run_install_cell(shell: _Shell, monkeypatch) -> list[str]:
  code = TransformerManager().transform_cell(notebook_header.install_cell())
  code = code.replace("/content/mmkit", str(shell.clone_into))
  before = len(shell.calls)
  exec(code, {"get_ipython": lambda: shell})
  return shell.calls[before:]


def test_install_cell_in_colab_installs_once(tmp_path, monkeypatch):
  checkout = tmp_path / "mmkit"
  real_find_spec = importlib.util.find_spec

  def find_spec(name, *args):  # as in a fresh Colab: importable only from the checkout
    if name == "mmkit":
      return real_find_spec(name) if str(checkout) in sys.path else None
    return real_find_spec(name, *args)

  monkeypatch.setattr(importlib.util, "find_spec", find_spec)
  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  monkeypatch.setattr(sys, "path", list(sys.path))
  shell = _Shell(checkout)
  first = _run_install_cell(shell, monkeypatch)
  assert [c.split()[:2] for c in first] == [["git", "clone"], ["%pip", "install"]]
  assert _run_install_cell(shell, monkeypatch) == [], "a second run must do nothing"
  # A restarted kernel that lost sys.path but kept the checkout: no second clone.
  monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(checkout)])
  assert [c.split()[0] for c in _run_install_cell(shell, monkeypatch)] == ["%pip"]


def test_install_cell_outside_colab_does_nothing(tmp_path, monkeypatch):
  monkeypatch.delitem(sys.modules, "google.colab", raising=False)
  shell = _Shell(tmp_path / "mmkit")
  assert _run_install_cell(shell, monkeypatch) == []
