"""The kit's mapped load keeps Beam's contract: same outputs, devices, paths; and copies nothing."""

import logging
import multiprocessing
import os

import apache_beam as beam
import pytest
import torch
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.ml.inference.base import KeyModelMapping, RunInference
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from apache_beam.testing.util import assert_that, equal_to
from torch import nn

from mmkit import models
from mmkit.beam_metrics import ALL, beam_load_counts
from mmkit.core import mmap_load
from mmkit.core.keyed import FixedBatchKeyedModelHandler
from mmkit.core.mmap_load import (
  MmapPytorchModelHandlerTensor,
  load_mmap_model,
  local_path,
  place_on,
)

SIZED = {"megabytes": 1.0}


@pytest.fixture(scope="module")
def sized_paths(tmp_path_factory):
  """Two 1 MB SizedModel state dicts with different weights."""
  folder = tmp_path_factory.mktemp("sized")
  paths = []
  for seed in range(2):
    torch.manual_seed(seed)
    path = folder / f"sized_{seed}.pt"
    torch.save(models.SizedModel(**SIZED, initialize=True).state_dict(), path)
    paths.append(str(path))
  return paths


def _outputs(handler, batch):
  model = handler.load_model()
  return [result.inference for result in handler.run_inference(batch, model)]


def test_same_outputs_bit_for_bit_as_beams_handler(sized_paths):
  batch = list(torch.rand(16, 64, generator=torch.Generator().manual_seed(0)))
  beam_handler = PytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED)
  mmap_handler = MmapPytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED)
  for ours, beams in zip(_outputs(mmap_handler, batch), _outputs(beam_handler, batch)):
    assert torch.equal(ours, beams)
  # A shipped model too (another class, its own parameters).
  cls, params = models.model_spec("specialist_clean")
  path = str(models.model_path("specialist_clean"))
  ours = _outputs(MmapPytorchModelHandlerTensor(path, cls, params), batch)
  beams = _outputs(PytorchModelHandlerTensor(path, cls, params), batch)
  assert all(torch.equal(a, b) for a, b in zip(ours, beams))


def test_the_weights_are_the_files_pages_not_a_copy(sized_paths):
  mapped = MmapPytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED).load_model()
  copied = PytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED).load_model()
  assert set(mmap_load.mapped_files(mapped).values()) == {sized_paths[0]}
  assert set(mmap_load.mapped_files(copied).values()) == {""}  # anonymous memory: a copy
  assert not mapped.training and not any(p.requires_grad for p in mapped.parameters())


def test_batches_are_sized_from_shapes_as_beam_counts_them(sized_paths):
  batch = [torch.rand(64), torch.rand(3, 64)]
  ours = MmapPytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED)
  beams = PytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED)
  assert ours.get_num_bytes(batch) == 4 * (64 + 3 * 64)
  # Beam counts one row of a 2-D tensor per element (finding 3): the same for 1-D tensors.
  assert ours.get_num_bytes(batch[:1]) == beams.get_num_bytes(batch[:1])


def test_update_model_path_loads_the_new_file(sized_paths):
  handler = MmapPytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED)
  handler.update_model_path(sized_paths[1])
  assert set(mmap_load.mapped_files(handler.load_model()).values()) == {sized_paths[1]}
  handler.update_model_path(None)  # Beam's "no new path": keep the current one
  assert handler.state_dict_path == sized_paths[1]


def test_gpu_path_moves_the_tensors_and_falls_back_to_cpu_without_a_gpu(sized_paths, caplog):
  model = load_mmap_model(sized_paths[0], models.SizedModel, SIZED)
  # The move that a GPU load makes, on a device every machine has: every tensor leaves the file.
  moved = place_on(model, torch.device("meta"))
  assert all(p.is_meta for p in moved.parameters())
  if not torch.cuda.is_available():
    handler = MmapPytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED, "GPU")
    with caplog.at_level(logging.WARNING):
      on_cpu = handler.load_model()
    assert "no GPU can be used" in caplog.text
    assert next(on_cpu.parameters()).device.type == "cpu"


@pytest.mark.skipif(
  not torch.cuda.is_available(), reason="no GPU here: the device check is skipped"
)
def test_gpu_load_puts_every_tensor_on_the_gpu(sized_paths):
  handler = MmapPytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED, "GPU")
  model = handler.load_model()
  assert all(p.is_cuda for p in model.parameters())
  beams = PytorchModelHandlerTensor(sized_paths[0], models.SizedModel, SIZED, "GPU")
  batch = list(torch.rand(4, 64))
  assert all(torch.equal(a, b) for a, b in zip(_outputs(handler, batch), _outputs(beams, batch)))


class _BufferedNet(nn.Module):
  def __init__(self):
    super().__init__()
    self.linear = nn.Linear(64, 10)
    self.register_buffer("scale", torch.ones(10), persistent=False)

  def forward(self, x):
    return self.linear(x) * self.scale


def test_bad_models_and_files_name_the_fix(tmp_path):
  path = tmp_path / "buffered.pt"
  torch.save(_BufferedNet().state_dict(), path)
  with pytest.raises(ValueError, match="scale.*persistent"):
    load_mmap_model(str(path), _BufferedNet)
  legacy = tmp_path / "legacy.pt"
  torch.save(nn.Linear(64, 10).state_dict(), legacy, _use_new_zipfile_serialization=False)
  with pytest.raises(ValueError, match="cannot be mapped.*torch.save"):
    load_mmap_model(str(legacy), nn.Linear, {"in_features": 64, "out_features": 10})
  with pytest.raises(ValueError, match="TorchScript"):
    MmapPytorchModelHandlerTensor(None, nn.Linear, torch_script_model_path="m.pt")


class FakeRemoteFileSystem(LocalFileSystem):
  """`mmkitfake://` + a local path: a file system Beam reads but the OS cannot map."""

  PREFIX = "mmkitfake://"

  @classmethod
  def scheme(cls):
    return "mmkitfake"

  def match(self, patterns, limits=None):
    return super().match([p[len(self.PREFIX) :] for p in patterns], limits)

  def open(self, path, *args, **kwargs):
    # Each read of the "remote" file is logged: the copies made, across processes.
    with open(os.environ["MMKIT_FAKE_OPEN_LOG"], "a") as log:
      log.write(f"{os.getpid()}\n")
    return super().open(path[len(self.PREFIX) :], *args, **kwargs)


@pytest.fixture
def remote(tmp_path, monkeypatch, sized_paths):
  monkeypatch.setenv("MMKIT_FAKE_OPEN_LOG", str(tmp_path / "opens.log"))
  monkeypatch.setenv("MMKIT_MODEL_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(mmap_load, "_verified", {})
  return FakeRemoteFileSystem.PREFIX + sized_paths[0]


def _opens(tmp_path) -> list[str]:
  log = tmp_path / "opens.log"
  return log.read_text().split() if log.exists() else []


def test_a_remote_file_is_copied_once_checked_and_mapped(remote, tmp_path, sized_paths):
  model = load_mmap_model(remote, models.SizedModel, SIZED)
  local = local_path(remote)
  assert local.startswith(str(tmp_path / "cache")) and local != sized_paths[0]
  assert set(mmap_load.mapped_files(model).values()) == {local}
  with open(local, "rb") as copy, open(sized_paths[0], "rb") as original:
    assert copy.read() == original.read()
  load_mmap_model(remote, models.SizedModel, SIZED)
  assert len(_opens(tmp_path)) == 1  # the second load maps the copy
  # A damaged copy (another process, this one restarted) is found by its checksum and made again.
  with open(local, "r+b") as f:
    f.write(b"\0" * 16)
  mmap_load._verified.clear()
  again = load_mmap_model(remote, models.SizedModel, SIZED)
  assert len(_opens(tmp_path)) == 2
  expected = load_mmap_model(sized_paths[0], models.SizedModel, SIZED)
  assert all(torch.equal(a, b) for a, b in zip(again.parameters(), expected.parameters()))


def _copy_in_child(remote, barrier, results):
  barrier.wait()
  results.put(local_path(remote))


def test_two_processes_racing_for_a_remote_file_copy_it_once(remote, tmp_path):
  fork = multiprocessing.get_context("fork")  # children inherit the fake file system
  barrier, results = fork.Barrier(2), fork.Queue()
  children = [fork.Process(target=_copy_in_child, args=(remote, barrier, results)) for _ in "ab"]
  for child in children:
    child.start()
  paths = {results.get(timeout=60) for _ in children}
  for child in children:
    child.join(timeout=60)
    assert child.exitcode == 0
  assert len(paths) == 1 and len(_opens(tmp_path)) == 1
  assert not [name for name in os.listdir(tmp_path / "cache") if name.endswith(".part")]


def test_a_missing_remote_file_names_the_path(remote):
  with pytest.raises(FileNotFoundError, match="nowhere.pt"):
    local_path(FakeRemoteFileSystem.PREFIX + "/nowhere.pt")


_SERVED: list = []


def test_keyed_models_with_fixed_batches_serve_what_beams_handler_serves(sized_paths):
  rows = torch.rand(24, 64, generator=torch.Generator().manual_seed(1))
  elements = [("ab"[i % 2], rows[i]) for i in range(len(rows))]  # alternating keys: hint 1 swaps

  def served(handler_class):
    mappings = [
      KeyModelMapping([key], handler_class(path, models.SizedModel, SIZED))
      for key, path in zip("ab", sized_paths)
    ]
    handler = FixedBatchKeyedModelHandler(mappings, max_models_per_worker_hint=1, batch_size=4)
    with beam.Pipeline(runner="FnApiRunner") as p:
      out = (
        p
        | beam.Create(list(enumerate(elements)), reshuffle=False)
        | beam.MapTuple(lambda i, kv: (kv[0], kv[1]))
        | RunInference(handler)
        | beam.MapTuple(lambda key, r: (key, tuple(r.example.tolist()), r.inference.tolist()))
      )
      # The in-process runner runs this Map here: the results land in this module's list.
      _ = out | beam.Map(_SERVED.append)
      assert_that(out | beam.combiners.Count.Globally(), equal_to([len(elements)]))
    collected = sorted(_SERVED)
    _SERVED.clear()
    return collected, p.result

  ours, our_result = served(MmapPytorchModelHandlerTensor)
  beams, _ = served(PytorchModelHandlerTensor)
  assert ours == beams
  # Batches of 4 hold both keys under hint 1: every batch swaps twice (6 batches, 12 loads).
  assert beam_load_counts(our_result)[ALL] == 12
