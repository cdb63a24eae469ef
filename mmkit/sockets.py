"""Beam's shared-model connections without Nagle's waits: `tcp_nodelay()` (04_memory).

Copy this file alone into a project (standard library only). The kit's keyed handler
(`mmkit.keyed.FixedBatchKeyedModelHandler`) calls `nodelay_while_alive(self)` in every process
that uses it, Beam's worker processes included.

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
"""

from __future__ import annotations

import socket
import threading
import weakref
from contextlib import contextmanager
from multiprocessing import connection
from typing import Callable, Iterator, Optional

__all__ = ["tcp_nodelay", "nodelay_while_alive", "has_nodelay"]

_lock = threading.Lock()
_users = 0
_plain: Optional[Callable] = None  # the SocketClient found when the patch went in
_plain_accept: Optional[Callable] = None  # and SocketListener.accept
_owners: "weakref.WeakSet" = weakref.WeakSet()  # objects holding the patch (nodelay_while_alive)


def _set_nodelay(conn: connection.Connection) -> None:
  # A socket object over the connection's fd: setting the option sets it on the shared socket.
  with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _socket_client(address):
  """`multiprocessing.connection.SocketClient`, and `TCP_NODELAY` on its TCP connections."""
  conn = _plain(address)
  if connection.address_type(address) == "AF_INET":
    _set_nodelay(conn)
  return conn


def _accept(listener):
  """`SocketListener.accept`, and `TCP_NODELAY` on the connection a server accepts.

  A server's replies need it too: `Connection` sends a message over 16 KB (a batch's
  predictions) as a header and a body, two writes, and Nagle holds the body's last segment.
  """
  conn = _plain_accept(listener)
  try:
    _set_nodelay(conn)
  except OSError:  # not a TCP socket (AF_UNIX): no Nagle to turn off
    pass
  return conn


def _turn_on() -> None:
  global _users, _plain, _plain_accept
  with _lock:
    if _users == 0:
      _plain, _plain_accept = connection.SocketClient, connection.SocketListener.accept
      connection.SocketClient = _socket_client
      connection.SocketListener.accept = _accept
    _users += 1


def _turn_off() -> None:
  global _users
  with _lock:
    _users -= 1
    # Put back only our own patches: one installed over them meanwhile stays.
    if _users == 0 and connection.SocketClient is _socket_client:
      connection.SocketClient = _plain
    if _users == 0 and connection.SocketListener.accept is _accept:
      connection.SocketListener.accept = _plain_accept


@contextmanager
def tcp_nodelay() -> Iterator[None]:
  """While active, TCP connections `multiprocessing` opens or accepts in this process send at once.

  The patch is process-wide (every thread's new connections), so it counts its users: nested
  and concurrent uses share one patch, which the last one out removes, on any exit (an error,
  KeyboardInterrupt). Connections already open keep what they had; other processes (Beam's
  worker processes) are not reached: `nodelay_while_alive` is for code that runs there. The
  messages are the same, only the waits go.
  """
  _turn_on()
  try:
    yield
  finally:
    _turn_off()


def nodelay_while_alive(owner: object) -> None:
  """`tcp_nodelay` in this process for as long as `owner` lives (once per owner; any process).

  For objects Beam unpickles in each worker process, such as a model handler: the first call
  there turns Nagle off for that process's new connections, and the owner's garbage
  collection (the DoFn torn down) undoes it.
  """
  with _lock:
    if owner in _owners:
      return
    _owners.add(owner)
  _turn_on()
  weakref.finalize(owner, _turn_off)


def has_nodelay(conn: connection.Connection) -> bool:
  """Whether a `multiprocessing` TCP connection has `TCP_NODELAY` set (Nagle's algorithm off)."""
  with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
