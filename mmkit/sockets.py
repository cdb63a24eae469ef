"""Beam's shared-model connections without Nagle's waits: `tcp_nodelay()` (04_memory).

Beam's `MultiProcessShared` (RunInference's model status, the keyed model manager, every model
another process holds) serves objects through `multiprocessing` managers over localhost TCP, and
`multiprocessing.connection.SocketClient` never sets `TCP_NODELAY`. A new connection ends its
handshake with a write and sends its first request with another: two writes in a row, so Nagle's
algorithm holds the request until the server ACKs the first write, and Linux delays that ACK by
40 ms. `acquire()` opens four connections, a thread's proxies of one object one more, and Beam
acquires new proxies all the time, so the waits add up: a keyed run of 2 models (`direct`)
opens 12 connections and took 0.89 s with the waits, 0.42 s without; a batch sent to a model
another worker process holds took 47.2 ms with them, 3.1 ms without (docs/beam_findings.md,
finding 13; `python bench/nagle.py --runs 5`).

Standalone (standard library only), so it can be copied into a project alone.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from multiprocessing import connection
from typing import Callable, Iterator, Optional

__all__ = ["tcp_nodelay", "has_nodelay"]

_lock = threading.Lock()
_users = 0
_plain: Optional[Callable] = None  # the SocketClient found when the patch went in


def _socket_client(address):
  """`multiprocessing.connection.SocketClient`, and `TCP_NODELAY` on its TCP connections."""
  conn = _plain(address)
  if connection.address_type(address) == "AF_INET":
    # A socket object over the connection's fd: setting the option sets it on the shared socket.
    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
      sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
  return conn


@contextmanager
def tcp_nodelay() -> Iterator[None]:
  """While active, `multiprocessing` connections this process opens over TCP send at once.

  The patch is process-wide (every thread's new connections), so it counts its users: nested
  and concurrent uses share one patch, which the last one out removes, on any exit (an error,
  KeyboardInterrupt). Connections already open keep what they had; other processes (Beam's
  worker processes) are not reached. The messages are the same, only the waits go.
  """
  global _users, _plain
  with _lock:
    if _users == 0:
      _plain = connection.SocketClient
      connection.SocketClient = _socket_client
    _users += 1
  try:
    yield
  finally:
    with _lock:
      _users -= 1
      # Put back only our own patch: one installed over it meanwhile stays.
      if _users == 0 and connection.SocketClient is _socket_client:
        connection.SocketClient = _plain


def has_nodelay(conn: connection.Connection) -> bool:
  """Whether a `multiprocessing` TCP connection has `TCP_NODELAY` set (Nagle's algorithm off)."""
  with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
