"""Loading a PyTorch model without copying it: cheap swaps for keyed models (05_thrashing).

Copy this file alone into a project (it needs only the standard library, Beam and torch) and
give `MmapPytorchModelHandlerTensor` wherever Beam's `PytorchModelHandlerTensor` went:

    from mmap_load import MmapPytorchModelHandlerTensor
    handler = KeyedModelHandler([
      KeyModelMapping(["a"], MmapPytorchModelHandlerTensor("/models/a.pt", Net, {})),
      KeyModelMapping(["b", "c"], MmapPytorchModelHandlerTensor("gs://bucket/b.pt", Net, {})),
    ], max_models_per_worker_hint=2)

Why: Beam's `PytorchModelHandlerTensor` opens the state dict as a file object
(`FileSystems.open`), reads every byte with `torch.load` and copies the tensors into a freshly
built (and initialised) module. A keyed model swapped out and back in pays all of that again,
so a thrashing pipeline spends its time reading and copying weights. `torch.load` can instead
map the file (`mmap=True`), but only from a path: given a file object it raises `ValueError`
(docs/beam_findings.md, finding 17), so Beam's handler cannot ask for it through
`load_model_args`. Here the module is built on the `meta` device (no memory, no random
initialisation) and `load_state_dict(..., assign=True)` makes its parameters the mapped
tensors themselves: a load costs the file's page-table entries, not a copy
(`python bench/swap_cost.py`: docs/fast_path.md, "Cheap swaps").

What it keeps of Beam's contract: the same outputs bit for bit, `device="GPU"` (the mapped
tensors are then copied to the GPU once per load: that copy remains, and Beam's CPU fallback
when no GPU can be used), `model_params`, `load_model_args` (but `mmap`), `update_model_path`,
and Beam's `run_inference`. A path Beam's `FileSystems` reads but the OS cannot map (`gs://`,
`s3://`, ...) is copied once into a local cache dir (checksummed, safe when processes race),
then mapped. Batches are sized from tensor shapes (Beam's `get_num_bytes` visits every number).

Mapped weights are file-backed memory: the kernel can drop those pages under pressure and read
them again, and processes that map the same file share them (docs/fast_path.md measures both).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import logging
import os
import tempfile
from typing import Any, Callable, Optional, Sequence

import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

__all__ = [
  "MmapPytorchModelHandlerTensor",
  "load_mmap_model",
  "local_path",
  "place_on",
  "cache_dir",
  "mapped_files",
  "meta_module",
]

_CHUNK = 1 << 24  # bytes per read when copying or hashing a file
_verified: dict[str, str] = {}  # remote path -> local copy checked in this process


def cache_dir() -> str:
  """`$MMKIT_MODEL_CACHE`, else `mmkit-models` in the temp dir: where remote models are copied."""
  return os.environ.get("MMKIT_MODEL_CACHE") or os.path.join(tempfile.gettempdir(), "mmkit-models")


def _is_local(path: str) -> bool:
  return FileSystems.get_scheme(path) in (None, "file")


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def local_path(path: str, cache: Optional[str] = None) -> str:
  """A path the OS can map: `path` itself if local, else a checked copy in `cache` (made once).

  The copy is named after the remote path, size and modification time, so a new version of the
  file gets a new copy. It is written to a temp file, hashed while written, and renamed into
  place under a lock, so two processes (or threads) asking at once copy it once and neither
  reads half a file. Its SHA-256 is kept beside it and checked once per process.
  """
  if _is_local(path):
    return path[len("file://") :] if path.startswith("file://") else path
  if path in _verified:
    return _verified[path]
  match = FileSystems.match([path])[0].metadata_list
  if not match:
    raise FileNotFoundError(f"model file {path} not found: check the path and your access to it.")
  meta = match[0]
  cache = cache or cache_dir()
  os.makedirs(cache, exist_ok=True)
  name = hashlib.sha256(f"{path}|{meta.size_in_bytes}|{meta.last_updated_in_seconds}".encode())
  local = os.path.join(cache, f"{name.hexdigest()[:24]}-{os.path.basename(path)}")
  with open(local + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # one copier; the others wait, then find the copy
    try:
      if not (os.path.exists(local) and _copy_is_whole(local, meta.size_in_bytes)):
        _copy(path, local)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  _verified[path] = local
  return local


def _copy_is_whole(local: str, size: int) -> bool:
  try:
    with open(local + ".sha256") as f:
      expected = f.read().strip()
  except OSError:
    return False
  return os.path.getsize(local) == size and _sha256(local) == expected


def _copy(path: str, local: str) -> None:
  digest = hashlib.sha256()
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(local), suffix=".part")
  try:
    with os.fdopen(fd, "wb") as out, FileSystems.open(path, "rb") as src:
      while chunk := src.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)
    with open(local + ".sha256", "w") as f:
      f.write(digest.hexdigest())
    os.replace(tmp, local)
  except BaseException:
    os.unlink(tmp)
    raise


def place_on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
  """`model` on `device`: mapped CPU tensors stay where they are, anything else is copied there."""
  if device.type != "cpu":
    model.to(device)  # the one copy left: host pages to device memory
  return model


def meta_module(model_class: Callable[..., torch.nn.Module], model_params: Optional[dict] = None):
  """`model_class(**model_params)` built on the `meta` device: its shapes, no memory, no init."""
  with torch.device("meta"):
    return model_class(**(model_params or {}))


def load_mmap_model(
  path: str,
  model_class: Callable[..., torch.nn.Module],
  model_params: Optional[dict] = None,
  device: torch.device = torch.device("cpu"),
  load_model_args: Optional[dict] = None,
  template: Optional[torch.nn.Module] = None,
) -> torch.nn.Module:
  """`model_class(**model_params)` with the state dict at `path` mapped, not copied, in eval mode.

  The module is built on the `meta` device, so its constructor allocates and initialises
  nothing (or copied from `template`, a `meta_module` of the same class: cheaper than building
  it again); `assign=True` then makes the mapped tensors its parameters and buffers.
  """
  args = {"weights_only": True, **(load_model_args or {}), "mmap": True, "map_location": "cpu"}
  try:
    state = torch.load(local_path(path), **args)
  except RuntimeError as error:
    if "mmap" in str(error):  # a file from torch.save(..., _use_new_zipfile_serialization=False)
      raise ValueError(
        f"{path} cannot be mapped ({error}): save it again with a plain torch.save(state_dict, "
        "path), or load it with Beam's PytorchModelHandlerTensor."
      ) from error
    raise
  model = (
    copy.deepcopy(template) if template is not None else meta_module(model_class, model_params)
  )
  model.load_state_dict(state, assign=True)
  left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
  if left:
    # Non-persistent buffers are not in a state dict: they would stay without memory.
    raise ValueError(
      f"{model_class.__name__} has tensors the state dict at {path} does not hold: "
      f"{', '.join(left[:3])}. Make those buffers persistent, or use Beam's "
      "PytorchModelHandlerTensor."
    )
  model.requires_grad_(False)
  return place_on(model, device).eval()


def mapped_files(model: torch.nn.Module) -> dict[str, str]:
  """Tensor name -> the file whose mapped pages hold it ('' in anonymous memory). Linux only.

  What tells a mapped load from a copy: read from `/proc/self/maps` at call time.
  """
  with open("/proc/self/maps") as maps:
    regions = []
    for line in maps:
      fields = line.split(maxsplit=5)
      low, high = (int(x, 16) for x in fields[0].split("-"))
      path = fields[5].strip() if len(fields) > 5 else ""
      regions.append((low, high, path if path.startswith("/") else ""))  # not [heap], [stack]
  found = {}
  for name, tensor in (*model.named_parameters(), *model.named_buffers()):
    address = tensor.untyped_storage().data_ptr()
    found[name] = next((path for low, high, path in regions if low <= address < high), "")
  return found


class MmapPytorchModelHandlerTensor(PytorchModelHandlerTensor):
  """Beam's `PytorchModelHandlerTensor`, loading the state dict by mapping it (no copy).

  Takes the same arguments (TorchScript paths are not supported: use Beam's handler). Loads in
  a few ms whatever the model's size on CPU, so a keyed model swapped out and back in costs
  little more than the first forward pass touching its pages.
  """

  def __init__(
    self,
    state_dict_path: str,
    model_class: Callable[..., torch.nn.Module],
    model_params: Optional[dict[str, Any]] = None,
    device: str = "CPU",
    **kwargs,
  ):
    if kwargs.get("torch_script_model_path"):
      raise ValueError(
        "MmapPytorchModelHandlerTensor maps state dicts only: for a TorchScript model use "
        "Beam's PytorchModelHandlerTensor."
      )
    super().__init__(state_dict_path, model_class, model_params, device, **kwargs)
    self.state_dict_path = state_dict_path
    self.model_class = model_class
    self.model_params = dict(model_params or {})
    self.device_name = device
    self.load_model_args = dict(kwargs.get("load_model_args") or {})
    self._template: Optional[torch.nn.Module] = None  # meta_module, made at the first load

  def __getstate__(self):
    # Sent to workers without the template: each process builds its own at its first load.
    return {**self.__dict__, "_template": None}

  def load_model(self) -> torch.nn.Module:
    device = torch.device("cpu")
    if self.device_name == "GPU":
      device = torch.device("cuda") if _cuda_usable() else device
      if device.type == "cpu":
        logging.warning("A 'GPU' device was asked for, but no GPU can be used: loading on CPU.")
    if self._template is None:  # built once per process: a copy of it is cheaper than a build
      self._template = meta_module(self.model_class, self.model_params)
    model = load_mmap_model(
      self.state_dict_path,
      self.model_class,
      self.model_params,
      device,
      self.load_model_args,
      self._template,
    )
    # Beam's run_inference moves each batch to this device; Beam's own load_model sets it too.
    self._device = device
    return model

  def update_model_path(self, model_path: Optional[str] = None):
    super().update_model_path(model_path)
    self.state_dict_path = model_path or self.state_dict_path

  def get_num_bytes(self, batch: Sequence[torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in batch)


def _cuda_usable() -> bool:
  """Whether CUDA can allocate a tensor (reported available is not enough: a driver may fail)."""
  if not torch.cuda.is_available():
    return False
  try:
    torch.empty(1, device="cuda")
    return True
  except Exception:  # noqa: BLE001 (any failure means: not usable)
    return False


def _example() -> dict:
  """A model saved, loaded by Beam's handler and by this one: the same outputs, and the weights
  of this one are the file's pages (Linux)."""
  folder = tempfile.mkdtemp(prefix="mmap-example-")
  path = os.path.join(folder, "model.pt")
  torch.manual_seed(0)
  torch.save(torch.nn.Linear(256, 8).state_dict(), path)
  params = {"in_features": 256, "out_features": 8}
  copied = PytorchModelHandlerTensor(path, torch.nn.Linear, params, device="CPU")
  mapped = MmapPytorchModelHandlerTensor(path, torch.nn.Linear, params, device="CPU")
  batch = [torch.ones(256), torch.zeros(256)]
  outputs = [
    [r.inference.tolist() for r in handler.run_inference(batch, handler.load_model())]
    for handler in (copied, mapped)
  ]
  return {
    "same_outputs": outputs[0] == outputs[1],
    "mapped_from": sorted(set(mapped_files(mapped.load_model()).values())),
    "file": path,
  }


if __name__ == "__main__":
  import json

  print(json.dumps(_example()))
