"""Installing the kit into other people's environments: Colab's cell, and a torch already there."""

from __future__ import annotations

import importlib.metadata
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


class _Colab:
  """Stands in for Colab's subprocesses: records each command, clones by making the folder, and
  fails or changes an installed version when told to."""

  def __init__(self, clone_into: Path, pip_fails: bool = False, pip_changes: str | None = None):
    self.calls: list[list[str]] = []
    self.clone_into, self.pip_fails, self.pip_changes = clone_into, pip_fails, pip_changes

  def run(self, command, **_):
    self.calls.append(command)
    if command[0] == "git":
      if self.clone_into.exists():  # what made an old `!git clone` fail on a second run
        return subprocess.CompletedProcess(command, 128, "", "destination path already exists")
      self.clone_into.mkdir()
    if "pip" in command and self.pip_fails:
      return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")
    return subprocess.CompletedProcess(command, 0, "", "")

  def distributions(self):
    """This environment's distributions, with `pip_changes` at another version once pip ran."""
    pip_ran = any("pip" in c for c in self.calls)
    return [
      _AtVersion(d, "0.0.1") if pip_ran and d.metadata["Name"] == self.pip_changes else d
      for d in _REAL_DISTRIBUTIONS()
    ]


_REAL_DISTRIBUTIONS = importlib.metadata.distributions


class _AtVersion:
  """A distribution as it would read after pip installed another version of it."""

  def __init__(self, dist, version: str):
    self._dist, self.version = dist, version

  def __getattr__(self, name):
    return getattr(self._dist, name)


def _run_install_cell(colab: _Colab, monkeypatch) -> list[list[str]]:
  code = notebook_header.install_cell().replace("/content/mmkit", str(colab.clone_into))
  monkeypatch.setattr(subprocess, "run", colab.run)
  monkeypatch.setattr(importlib.metadata, "distributions", colab.distributions)
  before = len(colab.calls)
  exec(compile(code, "install_cell", "exec"), {})
  return colab.calls[before:]


@pytest.fixture
def fresh_colab(tmp_path, monkeypatch):
  """A fresh Colab kernel: google.colab imported, mmkit importable only from the checkout."""
  checkout = tmp_path / "mmkit"
  real_find_spec = importlib.util.find_spec

  def find_spec(name, *args):
    if name == "mmkit":
      return real_find_spec(name) if str(checkout) in sys.path else None
    return real_find_spec(name, *args)

  monkeypatch.setattr(importlib.util, "find_spec", find_spec)
  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")  # Colab has Graphviz
  return checkout


def test_install_cell_is_plain_python_a_notebook_runs_as_written():
  code = notebook_header.install_cell()
  assert TransformerManager().transform_cell(code) == code + "\n"  # no ! or % to translate


def test_install_cell_in_colab_installs_once(fresh_colab, monkeypatch):
  colab = _Colab(fresh_colab)
  first = _run_install_cell(colab, monkeypatch)
  assert [c[:2] if c[0] == "git" else c[1:4] for c in first] == [
    ["git", "clone"],
    ["-m", "pip", "install"],
  ]
  assert str(fresh_colab) in sys.path
  assert _run_install_cell(colab, monkeypatch) == [], "a second run must do nothing"
  # A restarted kernel that lost sys.path but kept the checkout: no second clone.
  monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(fresh_colab)])
  assert [c[1:3] for c in _run_install_cell(colab, monkeypatch)] == [["-m", "pip"]]


def test_install_cell_installs_graphviz_only_where_dot_is_missing(fresh_colab, monkeypatch):
  monkeypatch.setattr(shutil, "which", lambda name: None if name == "dot" else f"/bin/{name}")
  calls = _run_install_cell(_Colab(fresh_colab), monkeypatch)
  assert calls[-1] == ["apt-get", "install", "-y", "-qq", "graphviz"]


def test_install_cell_adds_nothing_to_the_path_when_pip_fails(fresh_colab, monkeypatch):
  colab = _Colab(fresh_colab, pip_fails=True)
  with pytest.raises(RuntimeError, match="pip failed, mmkit is not installed: ERROR: No match"):
    _run_install_cell(colab, monkeypatch)
  assert str(fresh_colab) not in sys.path


def test_install_cell_asks_for_a_restart_when_pip_changed_an_imported_package(
  fresh_colab, monkeypatch
):
  colab = _Colab(fresh_colab, pip_changes="pytest")  # imported by this kernel
  with pytest.raises(RuntimeError, match=r"pip changed \['pytest'\].*restart the runtime"):
    _run_install_cell(colab, monkeypatch)
  assert str(fresh_colab) not in sys.path


def test_install_cell_outside_colab_does_nothing(tmp_path, monkeypatch):
  monkeypatch.delitem(sys.modules, "google.colab", raising=False)
  assert _run_install_cell(_Colab(tmp_path / "mmkit"), monkeypatch) == []


def test_one_setting_points_every_badge_and_clone_at_a_fork(tmp_path):
  nb = nbformat.reads((ROOT / "notebooks" / "01_ab_branch.ipynb").read_text(), as_version=4)
  forked = notebook_header.update(nb, "01_ab_branch.ipynb", "someone/fork")
  text = nbformat.writes(forked)
  assert "colab.research.google.com/github/someone/fork/blob/main/notebooks/01_ab" in text
  assert "https://github.com/someone/fork.git" in text and "mmkit-dev" not in text
  refused = subprocess.run(
    [sys.executable, str(ROOT / "tools" / "notebook_header.py"), "--check", "--repo", "x y"],
    capture_output=True,
    text=True,
  )
  assert refused.returncode == 2 and "OWNER/NAME" in refused.stderr
