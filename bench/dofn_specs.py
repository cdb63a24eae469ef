"""One notebook run top to bottom, with Beam's DoFn answers kept (as the notebooks run) or not.

    python bench/dofn_specs.py notebooks/01_ab_branch.ipynb [--as-shipped]

`mmkit.notebook.setup()` keeps each DoFn's state and timer specs and each function's arguments
(finding 20); `--as-shipped` puts Beam's own `get_dofn_specs` and `get_function_args_defaults`
back right after it, so every collect inspects every DoFn again. Time the two from outside, in
turn (A B A B ...), so that a drift in the machine's speed falls on both alike.

The notebook is read and run in memory: the committed file is not touched.
"""

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

AS_SHIPPED = (
  "\nfrom apache_beam.transforms import userstate\n"
  "userstate.get_dofn_specs = userstate.get_dofn_specs.plain  # Beam's own, as shipped\n"
  "from apache_beam.transforms import core\n"
  "core.get_function_args_defaults = core.get_function_args_defaults.plain\n"
)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebook", type=Path)
  parser.add_argument("--as-shipped", action="store_true", help="Beam's own inspections")
  args = parser.parse_args()
  nb = nbformat.read(args.notebook, as_version=4)
  setup = next(c for c in nb.cells if c.cell_type == "code" and "notebook.setup()" in c.source)
  if args.as_shipped:
    setup.source = setup.source.replace("notebook.setup()", "notebook.setup()" + AS_SHIPPED, 1)
  path = args.notebook.resolve().parent  # run where the notebook lives; nothing is written
  NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path)}}).execute()
  return 0


if __name__ == "__main__":
  sys.exit(main())
