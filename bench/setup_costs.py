"""One notebook run top to bottom, with what `mmkit.notebook.setup()` saves (as they run) or not.

    python bench/setup_costs.py notebooks/01_ab_branch.ipynb [--as-shipped] [--thawed]

`mmkit.notebook.setup()` keeps each DoFn's state and timer specs, each function's arguments and
each options view (finding 20); `--as-shipped` puts Beam's own `get_dofn_specs`,
`get_function_args_defaults` and `view_as` back right after it, so every collect inspects
every DoFn again. `setup()` also freezes the
objects alive after the imports out of the garbage collector's full walks; `--thawed` hands
them back (`gc.unfreeze()`). Time two variants from outside, in turn (A B A B ...), so that a
drift in the machine's speed falls on both alike.

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
  "from apache_beam.options.pipeline_options import PipelineOptions\n"
  "PipelineOptions.view_as = PipelineOptions.view_as.plain\n"
)
THAWED = "\nimport gc\ngc.unfreeze()  # every object back in the full collections\n"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebook", type=Path)
  parser.add_argument("--as-shipped", action="store_true", help="Beam's own inspections")
  parser.add_argument("--thawed", action="store_true", help="no objects frozen out of the gc")
  args = parser.parse_args()
  nb = nbformat.read(args.notebook, as_version=4)
  setup = next(c for c in nb.cells if c.cell_type == "code" and "notebook.setup()" in c.source)
  added = (AS_SHIPPED if args.as_shipped else "") + (THAWED if args.thawed else "")
  setup.source = setup.source.replace("notebook.setup()", "notebook.setup()" + added, 1)
  path = args.notebook.resolve().parent  # run where the notebook lives; nothing is written
  NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path)}}).execute()
  return 0


if __name__ == "__main__":
  sys.exit(main())
