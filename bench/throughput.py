"""Raw torch vs the example style vs the kit's recipe (mmkit.fastpath), in elements per second.

    python bench/throughput.py [--elements 20000 200000] [--json]

The same as `python -m mmkit bench`; run it on a quiet machine.
"""
import sys

from mmkit.__main__ import main

if __name__ == "__main__":
  sys.exit(main(["bench", *sys.argv[1:]]))
