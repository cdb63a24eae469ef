"""Writes the top of every notebook: the Colab badge, the guarded install cell, the kernelspec.

    python tools/notebook_header.py [--check] [--repo OWNER/NAME]
    # --check: exit 1 if a notebook differs; --repo: a fork's repository (default REPOSITORY)

The repository is the one setting for a fork or a move: the badge and the install cell of every
notebook point to it (notebooks/README.md says so). Only the first markdown cell's badge line,
the first code cell and the notebook's kernelspec are rewritten; other cells and their
outputs stay byte for byte as committed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPOSITORY = "mmkit-dev/mmkit"  # GitHub owner/name the badge opens and Colab clones
BRANCH = "main"

ROOT = Path(__file__).resolve().parents[1]
# What ipykernel's kernel reports: JupyterLab writes it on open, so the same text keeps a
# notebook unmodified when opened.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
BADGE_RE = re.compile(r"^\[!\[Open In Colab\]\(.*$", re.MULTILINE)


def badge(name: str, repository: str = REPOSITORY) -> str:
  """The markdown line of the "Open in Colab" badge for notebooks/<name>."""
  url = f"https://colab.research.google.com/github/{repository}/blob/{BRANCH}/notebooks/{name}"
  return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def install_cell(repository: str = REPOSITORY) -> str:
  """The first code cell: installs the kit in Colab only, once; a second run does nothing.

  Plain Python, so that it can tell what happened: a failed clone or pip stops the notebook
  (nothing is added to `sys.path`), and a pip that changed a package this kernel had already
  imported asks for a restart, after which the installed kit is found and the cell does nothing.
  """
  url = f"https://github.com/{repository}.git"
  return "\n".join(
    [
      "# Colab only, and only when mmkit is not importable yet: a re-run, or a local kernel,",
      "# does nothing. pip keeps Colab's torch: the kit asks for a range, not a version.",
      "import importlib.metadata as metadata",
      "import importlib.util",
      "import os",
      "import re",
      "import shutil",
      "import subprocess",
      "import sys",
      "",
      "",
      "def installed():",
      '    """{distribution: version}, names normalized as pip does."""',
      "    return {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version",
      "            for d in metadata.distributions()}",
      "",
      "",
      "if 'google.colab' in sys.modules and importlib.util.find_spec('mmkit') is None:",
      "    checkout, before = '/content/mmkit', installed()",
      f"    url = '{url}'",
      "    steps = [] if os.path.isdir(checkout) else [",
      f"        ('git', ['git', 'clone', '-q', '--depth', '1', '-b', '{BRANCH}', url, checkout])]",
      "    steps.append(('pip', [sys.executable, '-m', 'pip', 'install', '-q', '-e', checkout]))",
      "    if shutil.which('dot') is None:  # Graphviz draws the pipelines (Colab usually has it)",
      "        steps.append(('apt-get', ['apt-get', 'install', '-y', '-qq', 'graphviz']))",
      "    for name, step in steps:",
      "        done = subprocess.run(step, capture_output=True, text=True)",
      "        if done.returncode:",
      "            raise RuntimeError(f'{name} failed, mmkit is not installed: {done.stderr}')",
      "    changed = {name for name, v in installed().items() if before.get(name, v) != v}",
      "    imported = {re.sub(r'[-_.]+', '-', d).lower()",
      "                for module, dists in metadata.packages_distributions().items()",
      "                if module in sys.modules for d in dists}",
      "    if changed & imported:",
      "        raise RuntimeError(f'pip changed {sorted(changed & imported)}, which this kernel'",
      "                           ' had imported: restart the runtime (Runtime > Restart'",
      "                           ' session), then run the notebook again')",
      "    sys.path.insert(0, checkout)  # this kernel; new kernels find it installed",
    ]
  )


def update(
  nb: nbformat.NotebookNode, name: str, repository: str = REPOSITORY
) -> nbformat.NotebookNode:
  """Rewrites the badge line, the first code cell and the kernelspec of one notebook."""
  title = next(c for c in nb.cells if c.cell_type == "markdown")
  if not BADGE_RE.search(title.source):
    raise SystemExit(f"{name}: no Colab badge line in the first markdown cell")
  title.source = BADGE_RE.sub(lambda _: badge(name, repository), title.source, count=1)
  first_code = next(c for c in nb.cells if c.cell_type == "code")
  if "google.colab" not in first_code.source:
    raise SystemExit(f"{name}: the first code cell is not the Colab install cell")
  first_code.source = install_cell(repository)
  nb.metadata["kernelspec"] = dict(KERNELSPEC)
  return nb


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true", help="only report notebooks that differ")
  parser.add_argument(
    "--repo", default=REPOSITORY, metavar="OWNER/NAME", help="the GitHub repository (a fork)"
  )
  args = parser.parse_args(argv)
  if not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo):
    parser.error(f"--repo {args.repo!r}: give it as OWNER/NAME, e.g. {REPOSITORY}")
  stale = []
  for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
    before = path.read_text()
    after = nbformat.writes(update(nbformat.reads(before, as_version=4), path.name, args.repo))
    after += "\n"
    if after != before:
      stale.append(path.name)
      if not args.check:
        path.write_text(after)
  verb = "differ" if args.check else "rewritten"
  print(f"{len(stale)} notebook(s) {verb}: {' '.join(stale) or '-'}")
  return 1 if args.check and stale else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
