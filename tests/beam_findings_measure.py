"""Prints the timing figures of docs/beam_findings.md (tests never assert timings).

usage: python tests/beam_findings_measure.py
Medians of 7; on a shared machine compare the ratios measured in the same run.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time


def median_ms(fn, repeats: int = 7) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def get_num_bytes_against_inference() -> None:
  """Finding 3: Beam's PyTorch get_num_bytes against run_inference on the same batch."""
  import torch
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

  from mmkit.models import MLPClassifier

  handler = PytorchModelHandlerTensor(
    state_dict_path="unused.pt",
    model_class=MLPClassifier,
    model_params={"hidden": 64},
    device="CPU",
  )
  model = MLPClassifier(64).eval()
  print("batch  get_num_bytes_ms  run_inference_ms  ratio")
  for n in (32, 256, 1024):
    batch = [torch.rand(64) for _ in range(n)]
    sizing = median_ms(lambda: handler.get_num_bytes(batch))
    inference = median_ms(lambda: list(handler.run_inference(batch, model)))
    print(f"{n:5d}  {sizing:16.2f}  {inference:16.2f}  {sizing / inference:5.1f}")


HOST = """
import sys, time
from apache_beam.utils.multi_process_shared import MultiProcessShared
MultiProcessShared(dict, tag=sys.argv[1]).acquire()
print("ready", flush=True)
sys.stdin.read()
"""


def cross_process_acquire() -> None:
  """Finding 4: what a worker that does not host the models pays per batch to reach one."""
  from apache_beam.utils.multi_process_shared import MultiProcessShared

  tag = f"beam_findings_measure_{os.getpid()}"
  host = subprocess.Popen(
    [sys.executable, "-c", HOST, tag],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
  )
  try:
    assert host.stdout.readline().strip() == "ready"
    acquire, release = [], []
    for _ in range(7):
      start = time.perf_counter()
      shared = MultiProcessShared(dict, tag=tag)
      proxy = shared.acquire()  # what KeyedModelHandler.run_inference does for every batch
      middle = time.perf_counter()
      shared.release(proxy)
      acquire.append(middle - start)
      release.append(time.perf_counter() - middle)
    print(
      f"cross-process acquire {statistics.median(acquire) * 1e3:.0f} ms, "
      f"release {statistics.median(release) * 1e3:.0f} ms (medians of 7)"
    )
  finally:
    host.stdin.close()
    host.wait(timeout=30)
    for suffix in (".address", ".lock"):
      try:
        os.remove(os.path.join(tempfile.gettempdir(), tag + suffix))
      except OSError:
        pass


if __name__ == "__main__":
  get_num_bytes_against_inference()
  cross_process_acquire()
