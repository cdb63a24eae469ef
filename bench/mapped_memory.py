"""What mapped weights cost in memory: RSS against Pss, file-backed against anonymous.

    python bench/mapped_memory.py [--model-mb 64] [--models 4] [--json]

Each case runs in fresh processes (so nothing else a process did is counted) and reads
`/proc/PID/smaps_rollup` before the models are loaded and after a batch has run through each
(every page of their weights touched). Figures are in MB above that start:

- `one process`: `--models` models loaded by Beam's handler (`copy`) or the kit's (`mmap`);
- `two processes`: two worker-like processes loading the *same* model file, each figure per
  process: resident memory (`Rss`) counts the shared pages in both, `Pss` splits them;
- `paged out`: the kernel asked to reclaim the models' pages (`madvise(MADV_PAGEOUT)`, what
  memory pressure would do): file-backed pages go and are read again at the next touch,
  anonymous ones stay (this machine has no swap).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import sys

FIELDS = ("Rss", "Pss", "Anonymous", "Shared_Clean", "Private_Clean", "Pss_File", "Pss_Anon")
MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now


def smaps_rollup(pid: str = "self") -> dict[str, float]:
  """The memory fields of /proc/PID/smaps_rollup, in MB."""
  figures = {}
  with open(f"/proc/{pid}/smaps_rollup") as f:
    for line in f:
      name, _, rest = line.partition(":")
      if name in FIELDS:
        figures[name] = int(rest.split()[0]) / 1024
  return figures


def _above(after: dict, before: dict) -> dict:
  return {name: round(after[name] - before[name], 1) for name in after}


def _handler(load: str, path: str, megabytes: float):
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

  from mmkit.core.mmap_load import MmapPytorchModelHandlerTensor
  from mmkit.models import SizedModel

  cls = MmapPytorchModelHandlerTensor if load == "mmap" else PytorchModelHandlerTensor
  return cls(path, SizedModel, {"megabytes": megabytes})


def _page_out(models) -> None:
  """Asks the kernel to reclaim every page of the models' weights, as memory pressure would."""
  libc = ctypes.CDLL(None, use_errno=True)
  page = 4096
  for model in models:
    for tensor in model.parameters():
      start = tensor.untyped_storage().data_ptr() // page * page
      end = tensor.untyped_storage().data_ptr() + tensor.untyped_storage().nbytes()
      if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT):
        raise OSError(ctypes.get_errno(), "madvise(MADV_PAGEOUT) failed")


def _one_process(load: str, megabytes: float, n: int, queue) -> None:
  import torch

  from mmkit.models import sized_model_path

  paths = [str(sized_model_path(megabytes, i)) for i in range(n)]
  batch = torch.rand(32, 64)
  handlers = [_handler(load, path, megabytes) for path in paths]  # Beam imported before the start
  before = smaps_rollup()
  models = [handler.load_model() for handler in handlers]
  with torch.no_grad():
    for model in models:
      model(batch)
  loaded = smaps_rollup()
  _page_out(models)
  paged = smaps_rollup()
  with torch.no_grad():
    for model in models:
      model(batch)  # the pages come back where they can: from the file
  queue.put(
    {
      "load": load,
      "loaded": _above(loaded, before),
      "paged_out": _above(paged, before),
      "touched_again": _above(smaps_rollup(), before),
    }
  )


def _worker(load: str, megabytes: float, barrier, queue) -> None:
  import torch

  from mmkit.models import sized_model_path

  handler = _handler(load, str(sized_model_path(megabytes, 0)), megabytes)
  before = smaps_rollup()
  model = handler.load_model()
  with torch.no_grad():
    model(torch.rand(32, 64))
  barrier.wait()  # both processes hold the model: now each one's share is read
  queue.put({"load": load, **_above(smaps_rollup(), before)})
  barrier.wait()  # the other has read its figures too


def measure(megabytes: float, n: int) -> dict:
  from mmkit.models import sized_model_path

  for i in range(n):
    sized_model_path(megabytes, i)  # made before any process measures
  spawn = multiprocessing.get_context("spawn")
  out = {"model_mb": megabytes, "models": n, "one_process": [], "two_processes": []}
  for load in ("copy", "mmap"):
    queue = spawn.Queue()
    proc = spawn.Process(target=_one_process, args=(load, megabytes, n, queue))
    proc.start()
    out["one_process"].append(queue.get(timeout=300))
    proc.join()
    barrier, queue = spawn.Barrier(2), spawn.Queue()
    procs = [spawn.Process(target=_worker, args=(load, megabytes, barrier, queue)) for _ in "ab"]
    for proc in procs:
      proc.start()
    out["two_processes"] += [queue.get(timeout=300) for _ in procs]
    for proc in procs:
      proc.join()
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model-mb", type=float, default=64)
  parser.add_argument("--models", type=int, default=4)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  if not args.model_mb > 0 or args.models < 1:
    parser.error("--model-mb must be > 0 and --models >= 1")
  out = measure(args.model_mb, args.models)
  if args.json:
    print(json.dumps(out, indent=1))
    return 0
  import pandas as pd

  print(f"{args.models} models of {args.model_mb:g} MB in one process, MB above its start:")
  rows = [
    {"load": r["load"], "when": when, **r[when]}
    for r in out["one_process"]
    for when in ("loaded", "paged_out", "touched_again")
  ]
  print(pd.DataFrame(rows).to_string(index=False))
  print(f"\none {args.model_mb:g} MB model file loaded by two processes, per process:")
  print(pd.DataFrame(out["two_processes"]).to_string(index=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
