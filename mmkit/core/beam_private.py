"""Beam's private parts, in one place: every name the kit reaches into Beam 2.77 for (03, 04, 05).

Copy this file beside `keyed.py`, `cleanup.py` or `tracer.py` (it needs only the standard
library and Beam). Beam's public API cannot do what the kit does: see what its keyed model
manager decides, free the models it keeps after a run, stop the proxy servers it starts per
model, take Nagle's 40 ms waits off its shared-model sockets. All of that reads names Beam
keeps private, and they may change in any release. So they are read here only:

- on import the Beam version is checked; one this module was not tested with gets a warning
  (once) naming what to re-check;
- a private name that is missing raises `BeamInternalsChanged` naming it and the version,
  instead of a silent fallback (a renamed registry would otherwise become a silent leak).

`tests/test_beam_findings.py` guards the behaviour behind each name (docs/beam_findings.md).
"""

from __future__ import annotations

import glob
import os
import socket
import sys
import tempfile
import threading
import warnings
import weakref
from contextlib import contextmanager
from multiprocessing import connection
from typing import Any, Callable, Iterable, Iterator, Optional

import apache_beam
from apache_beam.ml.inference import base as _inference_base
from apache_beam.utils import multi_process_shared as _shared

__all__ = [
  "TESTED_BEAM_VERSIONS",
  "BEAM_VERSION",
  "BeamInternalsChanged",
  "KeyedModelManager",
  "manager_lru",
  "manager_servers",
  "manager_cap",
  "manager_handlers",
  "keyed_handler_hint",
  "skip_beams_hint_increment",
  "is_single_model",
  "keyed_handlers_by_id",
  "share_env_vars",
  "model_path_of",
  "shared_entries",
  "is_loaded",
  "is_run_tag",
  "retire_models",
  "stop_proxy_servers",
  "remove_rendezvous_files",
  "remove_stale_rendezvous_files",
  "derived_pipelines",
  "progress_text",
  "quiet_dot_lookup",
  "remember_dofn_specs",
  "remember_function_arguments",
  "remember_option_views",
  "distinct_pcollection_names",
  "tcp_nodelay",
  "nodelay_while_alive",
  "has_nodelay",
]

# The Beam releases whose private names below were checked (tests/test_beam_findings.py).
TESTED_BEAM_VERSIONS = ("2.77",)
BEAM_VERSION = apache_beam.__version__


class BeamInternalsChanged(AttributeError):
  """A private name of Beam's that the kit reads is gone: this Beam differs from the tested one."""


def _missing(owner: Any, name: str) -> BeamInternalsChanged:
  where = owner.__name__ if isinstance(owner, type) else type(owner).__name__
  return BeamInternalsChanged(
    f"Beam {BEAM_VERSION} has no {where}.{name}, which mmkit.core.beam_private reads (tested with "
    f"Beam {', '.join(TESTED_BEAM_VERSIONS)}): install apache-beam=={TESTED_BEAM_VERSIONS[-1]}.0 "
    "(constraints.txt), or update this module for the new Beam and re-run "
    "tests/test_beam_findings.py."
  )


def _private(owner: Any, name: str) -> Any:
  """`owner.name`, or BeamInternalsChanged naming it and the Beam version."""
  try:
    return getattr(owner, name)
  except AttributeError:
    raise _missing(owner, name) from None


def _check_version() -> None:
  major_minor = ".".join(BEAM_VERSION.split(".")[:2])
  if major_minor not in TESTED_BEAM_VERSIONS:
    warnings.warn(
      f"mmkit.core.beam_private was tested with Apache Beam {', '.join(TESTED_BEAM_VERSIONS)}; "
      f"this is {BEAM_VERSION}. It reads Beam's private names (listed in its __all__): re-run "
      "tests/test_beam_findings.py and tests/test_keyed.py before trusting the kit's figures.",
      stacklevel=3,
    )


_check_version()

# -- The keyed model manager (KeyedModelHandler with several models) -------------------------

# Beam's manager of a KeyedModelHandler's models: an LRU of model tags, capped by the hint.
KeyedModelManager = _private(_inference_base, "_ModelHandlerManager")


def manager_lru(manager: Any) -> dict:
  """{key: tag} of the models the manager holds, least recently used first (its LRU order)."""
  return _private(manager, "_tag_map")


def manager_servers(manager: Any) -> dict:
  """{tag: shared handle} of the models whose proxy server has started."""
  return _private(manager, "_proxy_map")


def manager_cap(manager: Any) -> Optional[int]:
  """The cap in force: the sum of the hints added so far (None: no cap)."""
  return _private(manager, "_max_models")


def manager_handlers(manager: Any) -> dict:
  """{key: ModelHandler} the manager loads models with."""
  return _private(manager, "_mh_map")


def keyed_handler_hint(handler: Any) -> Optional[int]:
  """A KeyedModelHandler's `max_models_per_worker_hint`, as Beam keeps it."""
  return _private(handler, "_max_models_per_worker_hint")


def skip_beams_hint_increment(handler: Any) -> None:
  """Stops Beam adding the hint to the cap on this handler copy's next batch (the kit adds it)."""
  _private(handler, "_max_models_per_worker_hint")
  handler._max_models_per_worker_hint = None


def is_single_model(handler: Any) -> bool:
  """Whether a KeyedModelHandler wraps one model (Beam then uses no manager)."""
  return _private(handler, "_single_model")


def keyed_handlers_by_id(handler: Any) -> dict:
  """{model id: ModelHandler} of a KeyedModelHandler with several models."""
  return _private(handler, "_id_to_mh_map")


def share_env_vars(wrapper: Any, inner: Any) -> None:
  """Gives a wrapping handler the wrapped one's environment variables, which KeyedModelHandler
  compares across models (set by ModelHandler.__init__, which a wrapper need not call)."""
  wrapper._env_vars = getattr(inner, "_env_vars", {})


def model_path_of(handler: Any) -> Optional[str]:
  """The file a model handler loads from (a wrapping handler's `inner` one's), or None.

  Beam's PyTorch handlers keep it in `_state_dict_path` or `_model_uri` (TorchScript).
  """
  while handler is not None:
    for name in ("_state_dict_path", "_model_uri"):
      path = getattr(handler, name, None)
      if path:
        return str(path)
    handler = getattr(handler, "inner", None)
  return None


# -- MultiProcessShared: the process-wide registry, its rendezvous files, its servers ----------


def shared_entries() -> dict:
  """{tag: entry} of this process's `MultiProcessShared` singletons (Beam's own registry)."""
  manager = _private(_shared, "_process_level_singleton_manager")
  return _private(manager, "entries")


def is_loaded(entry: Any) -> bool:
  """Whether a shared singleton holds its object (Beam spells the field `initialied`)."""
  return _private(entry, "initialied")


def is_run_tag(tag: Any) -> bool:
  """Tags Beam makes per run start with a uuid4 hex: keyed models (the bare uuid), and each
  RunInference's model status and copies (uuid + suffix). Other singletons are left alone."""
  if not (isinstance(tag, str) and len(tag) >= 32):
    return False
  try:
    int(tag[:32], 16)
    return True
  except ValueError:
    return False


def retire_models(tags: Iterable[str], force: bool = False) -> set[str]:
  """Stops the proxy servers of these shared models once freed (`force`: frees them first).

  Returns the tags whose model something still holds (left for a later call). Each server
  left running keeps two threads until the run ends (6,407 threads after 3,200 loads);
  stopping them mid-run costs about 1.5 ms per load and saves little on a quiet machine, but
  on one crowded with threads a 1,600-load run took 75 s as is and 9 s with them stopped
  (`python bench/evicted_servers.py`, docs/beam_findings.md section 1).
  """
  entries = shared_entries()
  addresses, held, files = set(), set(), []
  for tag in tags:
    entry = entries.get(tag)
    if entry is not None and is_loaded(entry):
      if not force:
        held.add(tag)
        continue
      entry.unsafe_hard_delete()
    entries.pop(tag, None)
    address_file = os.path.join(tempfile.gettempdir(), tag + ".address")
    address = _read_address(address_file)
    if address:
      addresses.add(address)
      files.append(address_file)
  stop_proxy_servers(addresses)
  _forget_proxy_connections(addresses)
  for address_file in files:
    remove_rendezvous_files(address_file)
  return held


def remove_stale_rendezvous_files(directory: Optional[str] = None) -> int:
  """Removes the rendezvous files of shared objects whose server is gone; returns how many objects.

  Each `MultiProcessShared` object (a keyed model, a model status) leaves `<tag>.address` and
  `<tag>.lock` in the temp dir. Beam deletes an address only when a later process fails to
  connect to it; under the multi-processing runner the servers die with the worker processes
  and the files stay (measured: 36 files per run of 2 models). The same test as Beam's decides
  what is stale: nothing accepts a connection at the address. A lock someone holds is left.
  """
  removed = 0
  for address_file in glob.glob(os.path.join(directory or tempfile.gettempdir(), "*.address")):
    if not is_run_tag(os.path.basename(address_file)[: -len(".address")]):
      continue  # not one of Beam's per-run tags
    address = _read_address(address_file)
    if address is None:
      continue  # unreadable or half-written: leave it to Beam
    try:
      with socket.create_connection(address, timeout=0.5):
        continue  # a live server
    except ConnectionRefusedError:
      pass
    except OSError:
      continue
    removed += remove_rendezvous_files(address_file)
  return removed


def remove_rendezvous_files(address_file: str) -> bool:
  """Removes `<tag>.address` and `<tag>.lock` unless another process holds the lock."""
  import fasteners  # Beam's own dependency, for the same locks

  lock = fasteners.InterProcessLock(address_file[: -len(".address")] + ".lock")
  if not lock.acquire(blocking=False):
    return False
  try:
    for path in (address_file, lock.path):
      try:
        os.remove(path)
      except OSError:
        pass
  finally:
    lock.release()
  return True


class _StopAccepting:
  """Stands in for a server's listener: the accept loop's next call ends its thread."""

  address = None

  def accept(self):
    raise SystemExit  # threads end quietly on SystemExit


def stop_proxy_servers(addresses: set) -> int:
  """Stops the in-process `multiprocessing` manager servers listening on `addresses`.

  `Server.serve_forever` has no stop method, and its accept loop retries forever on a closed
  socket; so the listener is swapped for one that ends the loop, the blocked accept is woken
  by a connection, and the stop event ends the serving thread. That thread resets
  `sys.stdout` on its way out (a Jupyter kernel's would be lost), so it is restored here.
  """
  from multiprocessing.managers import Server

  servers, handlers = {}, []
  for thread in threading.enumerate():
    target = getattr(thread, "_target", None)
    server = getattr(target, "__self__", None)
    if not (isinstance(server, Server) and tuple(server.address) in addresses):
      continue
    if target.__name__ in ("serve_forever", "accepter"):
      servers.setdefault(id(server), (server, []))[1].append(thread)
    elif target.__name__ == "handle_request" and (args := getattr(thread, "_args", None)):
      # A connection handler serves one client proxy until it hangs up. The proxies live in
      # Beam's finished DoFns, which the server's own objects keep alive: a cycle through a
      # running thread that no garbage collection breaks. Hanging up here ends it.
      # (Its connection is taken now: a thread that ends drops its arguments.)
      handlers.append((thread, args[0]))
  stdout, stderr = sys.stdout, sys.stderr
  listeners = []
  try:
    # All servers at once, in three sweeps: one at a time costs ~20 ms each in thread wake-ups.
    for server, _ in servers.values():
      listeners.append(server.listener)
      server.listener = _StopAccepting()
      try:
        with socket.create_connection(tuple(server.address), timeout=1):
          pass
      except OSError:
        pass
      if hasattr(server, "stop_event"):
        server.stop_event.set()
    for _, conn in handlers:
      _hang_up(conn)
    for thread in [t for _, threads in servers.values() for t in threads] + [
      t for t, _ in handlers
    ]:
      thread.join(timeout=2)
  finally:
    sys.stdout, sys.stderr = stdout, stderr
    for listener in listeners:
      listener.close()
  return len(servers)


def _forget_proxy_connections(addresses: set) -> None:
  """Drops the client connections `multiprocessing` caches per server address (and per thread).

  Proxies keep them in a class-level table that outlives the proxies, so each stopped server
  would otherwise leave an open socket in every thread that talked to it.
  """
  from multiprocessing.managers import BaseProxy

  for address in addresses:
    local, _ = BaseProxy._address_to_local.pop(address, (None, None))
    conn = getattr(local, "connection", None)
    if conn is not None:
      conn.close()


def _hang_up(conn) -> None:
  """Shuts a `multiprocessing` connection's socket down, which wakes a thread blocked reading it."""
  try:
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
      sock.shutdown(socket.SHUT_RDWR)
  except (OSError, ValueError):
    pass  # already closed


def _read_address(path: str) -> Optional[tuple[str, int]]:
  """The (host, port) a `MultiProcessShared` rendezvous file names, or None."""
  try:
    with open(path) as f:
      host, port = f.read().rsplit(":", 1)
    return host, int(port)
  except (OSError, ValueError):
    return None


# -- The InteractiveRunner -----------------------------------------------------------------


def derived_pipelines(env: Any, pipeline: Any) -> list:
  """The pipelines the InteractiveRunner derived from a user pipeline (no public way lists them)."""
  tracked = _private(env, "_tracked_user_pipelines")
  return list(_private(tracked, "_user_pipelines").get(pipeline, ()))


def progress_text(indicator: Any) -> str:
  """The text Interactive Beam's "Processing..." indicator shows while it runs."""
  return _private(indicator, "_enter_text")


def _replace_once(owner: Any, name: str, make: Callable, marker: str = "mmkit_remembered") -> None:
  """Puts `make(beams_own)` in place of Beam's `owner.<name>`, unless it is there already.

  The replacement carries `marker` (so a second call, a re-run setup cell, changes nothing) and
  Beam's own function as `.plain` (the bench scripts put it back to measure Beam as shipped).
  """
  beams = _private(owner, name)
  if getattr(beams, marker, False):
    return
  replacement = make(beams)
  setattr(replacement, marker, True)
  replacement.plain = beams
  setattr(owner, name, replacement)


class _PerObject:
  """Answers kept per live object, by its id, and dropped when the object goes."""

  def __init__(self) -> None:
    self._known: dict[int, Any] = {}

  def get(self, obj: Any, make: Callable[[], Any]) -> Any:
    if id(obj) in self._known:
      return self._known[id(obj)]
    answer = make()
    try:
      weakref.finalize(obj, self._known.pop, id(obj), None)
    except TypeError:  # no weak reference to it: nothing tells when its id is free again
      return answer
    self._known[id(obj)] = answer
    return answer


def quiet_dot_lookup() -> None:
  """Interactive Beam decides between drawing and text by running `which dot`, whose answer
  (`/usr/bin/dot`) lands in the output of every `ib.collect` cell where Graphviz is installed.
  The same decision, made with `shutil.which`, prints nothing. Idempotent."""
  import shutil

  from apache_beam.runners.interactive.display import pipeline_graph_renderer as renderers

  def make(beams):
    def get_renderer(option=None):
      if option is None:
        option = "graph" if shutil.which("dot.exe" if os.name == "nt" else "dot") else "text"
      return beams(option)

    return get_renderer

  _replace_once(renderers, "get_renderer", make, marker="mmkit_quiet")


def remember_dofn_specs() -> None:
  """Beam's `userstate.get_dofn_specs` inspects the signature of every method of a DoFn each
  time it is asked, and an `ib.collect` asks for every DoFn each of the 16 times it turns the
  pipeline into its proto: 58% of a small collect (docs/beam_findings.md, finding 20). A
  DoFn's methods do not change once it is built, so the answer is kept per DoFn object, for as
  long as the object lives; each caller gets its own copy of the sets. An object that cannot be
  weakly referenced is inspected every time, as before. Idempotent."""
  from apache_beam.transforms import userstate

  def make(beams):
    known = _PerObject()

    def get_dofn_specs(dofn):
      states, timers = known.get(dofn, lambda: beams(dofn))
      return set(states), set(timers)

    return get_dofn_specs

  _replace_once(userstate, "get_dofn_specs", make)


def remember_function_arguments() -> None:
  """Beam's `core.get_function_args_defaults` runs `inspect.signature` on a DoFn's method each
  time a ParDo is built or checked, and an `ib.collect` rebuilds every ParDo from the proto
  several times: about 5,900 signatures in a collect of `Create | Map | Map`, for a handful of
  functions (finding 20). The answer depends only on the function and, for a bound method, on
  the class it is bound to, so it is kept per function for as long as the function lives;
  each caller gets its own copy of the lists. Anything that cannot be weakly referenced or
  hashed is inspected every time, as before. Idempotent."""
  from apache_beam.transforms import core

  def make(beams):
    known: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()

    def get_function_args_defaults(f):
      function, bound_to = getattr(f, "__func__", f), type(getattr(f, "__self__", None))
      try:
        answers = known.setdefault(function, {})
      except TypeError:  # no weak reference to it, or unhashable
        return beams(f)
      if bound_to not in answers:
        answers[bound_to] = beams(f)
      args, defaults = answers[bound_to]
      return list(args), list(defaults)

    return get_function_args_defaults

  _replace_once(core, "get_function_args_defaults", make)


def remember_option_views() -> None:
  """Beam's `PipelineOptions.view_as(cls)` builds a new argparse parser for `cls` and parses the
  flags again on every call, and an `ib.collect` of `Create | Map | Map` calls it about 1,800
  times, 1,260 of them for a view it had already made of the same options object (finding 20).
  A view holds nothing of its own: its values live in the source's `_all_options`, which all
  views share, so the view made first is handed out again for as long as the source object
  lives and still holds the same flags and option store. Idempotent."""
  from apache_beam.options.pipeline_options import PipelineOptions

  def make(beams):
    known = _PerObject()

    def view_as(self, cls):
      views = known.get(self, dict)  # a new dict each time for an object with no weak reference
      view = views.get(cls)
      stale = view is None or view._all_options is not self._all_options
      if stale or view._flags is not self._flags:
        view = views[cls] = beams(self, cls)
      return view

    view_as.__doc__ = beams.__doc__
    return view_as

  _replace_once(PipelineOptions, "view_as", make)


@contextmanager
def distinct_pcollection_names() -> Iterator[None]:
  """Beam's `PipelineGraph` names a PCollection that no variable holds `pcoll<hash(id) % 10000>`.
  String hashes change with each process, so two of one pipeline's PCollections sometimes get
  the same name, and the graph merges them: about 1 picture in 360 of a pipeline with 8 such
  PCollections, most of the time past 150. Inside this block they are numbered in the order
  Beam meets them instead (a name in the module shadows the builtin `hash`)."""
  from apache_beam.runners.interactive.display import pipeline_graph

  _private(pipeline_graph.PipelineGraph, "_generate_graph_dicts")  # where Beam calls hash()
  numbers: dict = {}
  pipeline_graph.hash = lambda pcoll_id: numbers.setdefault(pcoll_id, len(numbers))
  try:
    yield
  finally:
    del pipeline_graph.hash


# -- The sockets of Beam's shared objects: Nagle's algorithm off ------------------------------
#
# Beam's `MultiProcessShared` (RunInference's model status, the keyed model manager, every model
# another process holds) serves objects through `multiprocessing` managers over localhost TCP,
# and `multiprocessing.connection.SocketClient` never sets `TCP_NODELAY`. A new connection ends
# its handshake with a write and sends its first request with another: two writes in a row, so
# Nagle's algorithm holds the request until the server ACKs the first write, and Linux delays
# that ACK by 40 ms. Beam acquires new proxies all the time, so the waits add up: a keyed run of
# 2 models (`direct`) took 0.89 s with the waits, 0.42 s without; a batch sent to a model another
# worker process holds took 47.2 ms with them, 3.1 ms without (docs/beam_findings.md, finding 13;
# `python bench/nagle.py --runs 5`). The kit's keyed handler calls `nodelay_while_alive(self)`
# in every process that uses it, Beam's worker processes included.

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


def _example() -> dict:
  """The Beam version against the tested ones, and a connection made with Nagle's algorithm off."""
  with connection.Listener(("127.0.0.1", 0)) as listener:
    with tcp_nodelay():
      client = connection.Client(listener.address)
    plain = connection.Client(listener.address)
    result = {
      "beam": BEAM_VERSION,
      "tested": list(TESTED_BEAM_VERSIONS),
      "nodelay_inside": has_nodelay(client),
      "nodelay_after": has_nodelay(plain),
    }
    client.close()
    plain.close()
  return result


if __name__ == "__main__":
  import json

  print(json.dumps(_example()))
