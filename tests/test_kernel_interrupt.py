"""A reader presses stop in Jupyter during a multi-process run: it stops; the next run works.

A real kernel, interrupted the way JupyterLab's stop button does it (the kernel manager's
`interrupt_kernel`), once as Beam's worker processes appear and once mid-run. That sends
SIGINT to the kernel's whole process group, Beam's workers included, so they end by
themselves; `tests/test_cleanup.py` covers a SIGINT to the kernel process alone (`kill -INT`),
where the kit has to end the workers itself.
"""

import queue
import time

import psutil
import pytest
from interrupted_run import is_beam_worker  # tests/ is on the path: the script's own check
from jupyter_client.manager import start_new_kernel

SLOW_RUN = (
  "run_keyed(KeyedRun(models=4, hint=1, elements=20000, stream='cycle', batch_size=1, "
  "runner='multiprocess'), runner_options('multiprocess'))"
)
NEXT_RUN = (
  "report = run_keyed(KeyedRun(models=3, hint=1, elements=30, stream='cycle', batch_size=3))\n"
  "print(report.elements_out, report.loads)"
)


@pytest.fixture(scope="module")
def kernel():
  manager, client = start_new_kernel(kernel_name="python3")
  try:
    yield manager, client
  finally:
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def run_cell(client, code: str, timeout: float = 120) -> tuple[str, list[str]]:
  """Runs `code`, returns (printed text, names of errors raised); fails if not done in time."""
  msg_id = client.execute(code)
  printed, errors = [], []
  deadline = time.monotonic() + timeout
  while True:
    try:
      msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
    except queue.Empty:
      pytest.fail(f"the cell did not finish within {timeout} s: {code}")
    if msg["parent_header"].get("msg_id") != msg_id:
      continue
    kind = msg["msg_type"]
    if kind == "stream" and msg["content"]["name"] == "stdout":
      printed.append(msg["content"]["text"])
    elif kind == "error":
      errors.append(msg["content"]["ename"])
    elif kind == "status" and msg["content"]["execution_state"] == "idle":
      return "".join(printed), errors


def interrupt_when(manager, moment: str) -> None:
  """Like interrupted_run.py: as Beam's workers appear, or after some seconds."""
  if moment == "workers-start":
    deadline = time.monotonic() + 60
    kernel = psutil.Process(manager.provisioner.process.pid)
    while (
      not any(is_beam_worker(p) for p in kernel.children(recursive=True))
      and time.monotonic() < deadline
    ):
      time.sleep(0.01)
  else:
    time.sleep(float(moment))
  manager.interrupt_kernel()


@pytest.mark.parametrize("moment", ["workers-start", "6"])
def test_stop_in_a_real_kernel_ends_the_run_and_the_next_run_works(kernel, moment):
  import threading

  manager, client = kernel
  run_cell(
    client,
    "from mmkit import notebook; notebook.setup()\n"  # as the notebooks start
    "from mmkit.experiment import KeyedRun, run_keyed\nfrom mmkit.pipelines import runner_options",
  )
  pressing_stop = threading.Thread(target=interrupt_when, args=(manager, moment))
  pressing_stop.start()
  started = time.monotonic()
  _, errors = run_cell(client, SLOW_RUN, timeout=90)
  pressing_stop.join()
  assert errors == ["KeyboardInterrupt"], errors
  assert time.monotonic() - started < 60  # the whole run would take minutes
  assert not psutil.Process(manager.provisioner.process.pid).children(recursive=True)
  printed, errors = run_cell(client, NEXT_RUN)
  # 30 served, a load per element (hint 1, cycle)
  assert not errors and printed.split() == ["30", "30"]
