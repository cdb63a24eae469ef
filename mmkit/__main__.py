"""`python -m mmkit <command>`: the kit's command line (see `python -m mmkit --help`)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from mmkit import sweep


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = sweep._OneLineErrors(prog="python -m mmkit", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  sweep.add_parser(commands)
  args = parser.parse_args(argv)
  return args.func(args, parser)


if __name__ == "__main__":
  sys.exit(main())
