"""Stopping a run: the interrupt reaches the main thread even if another thread took the signal."""

import signal
import threading
import time

import pytest

from mmkit.workers import stop_workers_on_interrupt


def test_a_sigint_taken_by_another_thread_still_interrupts_a_main_thread_blocked_on_a_lock():
  # What Beam does while a bundle runs: the main thread waits on a lock, other threads work.
  # The signal lands in a worker thread; Python would run the handler only once the lock
  # is released (here after 10 s), so without the kit's watcher the stop comes 10 s late.
  ready = threading.Event()

  def take_the_signal():
    ready.wait()
    time.sleep(0.2)  # the main thread is asleep on its lock by now
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

  started = time.monotonic()
  with pytest.raises(KeyboardInterrupt):
    with stop_workers_on_interrupt():
      threading.Thread(target=take_the_signal, daemon=True).start()
      ready.set()
      threading.Event().wait(timeout=10)
  assert time.monotonic() - started < 3


def test_the_wake_up_fd_and_handler_are_restored_after_the_run():
  handler = signal.getsignal(signal.SIGINT)
  with stop_workers_on_interrupt():
    assert signal.getsignal(signal.SIGINT) is not handler
  assert signal.getsignal(signal.SIGINT) is handler
  assert signal.set_wakeup_fd(-1) == -1  # nothing of the kit's is left installed
  assert not [t for t in threading.enumerate() if t.name == "mmkit-interrupt-watcher"]
