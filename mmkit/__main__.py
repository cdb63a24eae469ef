"""`python -m mmkit <command>`: the kit's command line (see `python -m mmkit --help`)."""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
  # Beam logs optional-dependency warnings at import time; a CLI user wants the table only.
  logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
  from mmkit import benchmark, sweep

  parser = sweep._OneLineErrors(prog="python -m mmkit", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  sweep.add_parser(commands)
  benchmark.add_parser(commands)
  args = parser.parse_args(argv)
  return args.func(args, parser)


if __name__ == "__main__":
  sys.exit(main())
