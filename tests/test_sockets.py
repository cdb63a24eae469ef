"""`beam_private.tcp_nodelay`: new TCP connections send at once while it is active, only then."""

from __future__ import annotations

import gc
import subprocess
import sys
from multiprocessing import connection
from multiprocessing.connection import Client, Listener

import pytest

from mmkit import experiment
from mmkit.core import beam_private
from mmkit.core.beam_private import has_nodelay, tcp_nodelay
from mmkit.experiment import run_keyed
from mmkit.settings import KeyedRun


@pytest.fixture
def listener():
  # No authkey: no handshake, so no accept needed while the backlog has room.
  with Listener(("127.0.0.1", 0), backlog=16) as listening:
    yield listening


def test_connections_opened_while_active_have_nagle_off_and_others_keep_it(listener):
  plain = connection.SocketClient
  with Client(listener.address) as before:
    with tcp_nodelay():
      with Client(listener.address) as during:
        assert has_nodelay(during)
      assert not has_nodelay(before)  # connections already open keep what they had
    with Client(listener.address) as after:
      assert not has_nodelay(after)
  assert connection.SocketClient is plain


def test_nested_and_overlapping_uses_share_one_patch_removed_by_the_last(listener):
  plain = connection.SocketClient
  with tcp_nodelay():
    with tcp_nodelay():  # the explorer around run_keyed
      pass
    with Client(listener.address) as conn:  # the inner exit left the outer's patch in place
      assert has_nodelay(conn)
  assert connection.SocketClient is plain
  # Uses that do not nest (two threads' runs): the first out leaves the patch to the second.
  first, second = tcp_nodelay(), tcp_nodelay()
  first.__enter__()
  second.__enter__()
  first.__exit__(None, None, None)
  with Client(listener.address) as conn:
    assert has_nodelay(conn)
  second.__exit__(None, None, None)
  assert connection.SocketClient is plain


@pytest.mark.parametrize("error", [RuntimeError("failed"), KeyboardInterrupt()])
def test_the_patch_is_removed_on_an_error_and_on_an_interrupt(error):
  plain = connection.SocketClient
  with pytest.raises(type(error)):
    with tcp_nodelay():
      raise error
  assert connection.SocketClient is plain


@pytest.mark.parametrize("error", [RuntimeError("failed"), KeyboardInterrupt()])
def test_run_keyed_removes_the_patch_when_its_run_fails_or_is_interrupted(monkeypatch, error):
  plain = connection.SocketClient

  def broken(*args, **kwargs):
    raise error

  monkeypatch.setattr(experiment, "keyed_pipeline", broken)
  with pytest.raises(type(error)):
    run_keyed(KeyedRun(models=2, elements=8, model_mb=4, batch_size=8, runner="direct"))
  assert connection.SocketClient is plain


def test_every_connection_of_a_keyed_run_goes_through_the_patch(monkeypatch):
  plain = connection.SocketClient
  patched_when_opened = []

  def recording(address):
    # Called by the patch, if active: then `SocketClient` is the patch, not this function.
    patched_when_opened.append(connection.SocketClient is not recording)
    return plain(address)

  monkeypatch.setattr(connection, "SocketClient", recording)
  report = run_keyed(KeyedRun(models=2, elements=8, model_mb=4, batch_size=8, runner="direct"))
  assert report.elements_out == 8
  # The model status and keyed manager proxies of RunInference's setup, its first batch, and
  # the cleanup's releases: every one opened with Nagle off.
  assert len(patched_when_opened) >= 10 and all(patched_when_opened)
  # run_keyed's own patch is gone; what may be left is the keyed handler's, for as long as the
  # handler lives (here pytest keeps the stopped server threads' exceptions, which hold it:
  # the next test checks in a process of its own that it goes).
  assert beam_private._users == len(beam_private._owners) <= 1


def test_the_handlers_patch_goes_with_the_handler_after_a_run():
  script = (
    "import gc\n"
    "from multiprocessing import connection\n"
    "plain = connection.SocketClient\n"
    "from mmkit.experiment import KeyedRun, run_keyed\n"
    "run_keyed(KeyedRun(models=2, elements=8, model_mb=4, batch_size=8))\n"
    "gc.collect()\n"
    "print(connection.SocketClient is plain)\n"
  )
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert done.stdout.split()[-1:] == ["True"], done.stderr[-2000:]


def test_connections_accepted_while_active_have_nagle_off_too(listener):
  """A server's replies (a batch's predictions, over 16 KB: two writes) must not wait either."""
  accept = connection.SocketListener.accept
  with tcp_nodelay():
    with Client(listener.address), listener.accept() as accepted:
      assert has_nodelay(accepted)
  with Client(listener.address), listener.accept() as accepted:
    assert not has_nodelay(accepted)
  assert connection.SocketListener.accept is accept


def test_a_handler_keeps_nagle_off_in_its_process_while_it_lives(listener):
  """What each Beam worker process does at RunInference's setup, undone when the DoFn goes."""
  from apache_beam.ml.inference.base import KeyModelMapping
  from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

  from mmkit.core.keyed import FixedBatchKeyedModelHandler
  from mmkit.models import MLPClassifier, model_path

  plain = connection.SocketClient
  path = str(model_path("specialist_clean"))
  handler = FixedBatchKeyedModelHandler(
    [KeyModelMapping([k], PytorchModelHandlerTensor(path, MLPClassifier, {})) for k in "ab"]
  )
  handler.set_environment_vars()  # Beam's first call on the handler in a process's setup
  handler.set_environment_vars()  # a second setup of the same handler: still one user
  with Client(listener.address) as conn:
    assert has_nodelay(conn)
  del handler
  gc.collect()
  assert connection.SocketClient is plain
  with Client(listener.address) as conn:
    assert not has_nodelay(conn)
