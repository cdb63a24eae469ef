"""The kit's small torch models, their shipped weights, models of a chosen size (01-06).

Every model maps float32 [B, 64] digits to [B, 10] logits (the denoiser: to [B, 64]).
Shipped weights live in `data/models/` (regenerate: `python -m mmkit.train`); synthetic
models for memory experiments are made on demand in a cache folder, never committed.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
  "SOURCES",
  "MLPClassifier",
  "ConvClassifier",
  "Denoiser",
  "SizedModel",
  "uninitialized_linear",
  "MODEL_ZOO",
  "models_dir",
  "model_spec",
  "model_path",
  "load_model",
  "cache_dir",
  "sized_model_path",
  "BenchMLP",
  "bench_model_path",
  "load_bench_model",
  "predict",
]

# The same names as mmkit.data.SOURCES, repeated so this module works when copied alone.
SOURCES = ("clean", "noisy", "rotated", "inverted", "blurred", "shifted", "flipped", "dimmed")


class MLPClassifier(nn.Module):
  """64 -> hidden -> 10: model A of the A/B notebook, and every specialist."""

  def __init__(self, hidden: int = 64):
    super().__init__()
    self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.net(x)


class ConvClassifier(nn.Module):
  """A small conv net on the 8x8 grid: model B of the A/B notebook (another architecture)."""

  def __init__(self, channels: int = 16):
    super().__init__()
    self.features = nn.Sequential(
      nn.Conv2d(1, channels, 3, padding=1),
      nn.ReLU(),
      nn.MaxPool2d(2),
      nn.Conv2d(channels, 2 * channels, 3, padding=1),
      nn.ReLU(),
    )
    self.head = nn.Linear(2 * channels * 16, 10)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.features(x.reshape(-1, 1, 8, 8)).flatten(1))


class Denoiser(nn.Module):
  """64 -> 32 -> 64 autoencoder trained to map noisy digits to clean ones (02_sequence)."""

  def __init__(self, code: int = 32):
    super().__init__()
    self.net = nn.Sequential(
      nn.Linear(64, 128),
      nn.ReLU(),
      nn.Linear(128, code),
      nn.ReLU(),
      nn.Linear(code, 128),
      nn.ReLU(),
      nn.Linear(128, 64),
      nn.Sigmoid(),
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.net(x)


def uninitialized_linear(*shape) -> nn.Linear:
  """`nn.Linear(*shape)` without random init, on the default device (`meta` inside
  `with torch.device("meta")`, where `mmkit.core.mmap_load` builds a module: then it holds no
  memory).

  `torch.nn.utils.skip_init` would put it on the CPU whatever the default device.
  """
  return nn.Linear(*shape, device="meta").to_empty(device=torch.empty(0).device)


class SizedModel(nn.Module):
  """A classifier whose float32 weights take about `megabytes` MB, so loads show in memory (04)."""

  def __init__(self, megabytes: float = 16.0, initialize: bool = False):
    super().__init__()
    # 64 -> w -> w -> 10 holds about w*w floats; pick w so they take the requested bytes.
    floats = megabytes * 2**20 / 4
    width = max(8, int((-(64 + 10 + 3) + ((64 + 10 + 3) ** 2 + 4 * floats) ** 0.5) / 2))
    # Random init of a big layer costs more than loading its weights; Beam loads a state
    # dict right after construction, so only `sized_model_path` asks for an initialized model.
    linear = nn.Linear if initialize else uninitialized_linear
    self.net = nn.Sequential(
      linear(64, width), nn.ReLU(), linear(width, width), nn.ReLU(), linear(width, 10)
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.net(x)


MODEL_ZOO: dict[str, tuple[type, dict]] = {
  "ab_mlp": (MLPClassifier, {"hidden": 32}),
  "ab_cnn": (ConvClassifier, {"channels": 16}),
  "denoiser": (Denoiser, {"code": 32}),
  "general": (MLPClassifier, {"hidden": 64}),
  **{f"specialist_{source}": (MLPClassifier, {"hidden": 64}) for source in SOURCES},
}


def models_dir() -> Path:
  """`$MMKIT_MODELS`, else `data/models/` beside the digits."""
  default = (
    Path(os.environ.get("MMKIT_DATA") or Path(__file__).resolve().parents[1] / "data") / "models"
  )
  return Path(os.environ.get("MMKIT_MODELS") or default)


def model_spec(name: str) -> tuple[type, dict]:
  """(model class, constructor kwargs) of a shipped model: what PytorchModelHandlerTensor needs."""
  if name not in MODEL_ZOO:
    raise ValueError(f"unknown model {name!r}: the kit ships {', '.join(MODEL_ZOO)}.")
  cls, params = MODEL_ZOO[name]
  return cls, dict(params)


def model_path(name: str) -> Path:
  """Path of a shipped model's state dict; a clear error if it was never trained."""
  model_spec(name)
  path = models_dir() / f"{name}.pt"
  if not path.exists():
    raise FileNotFoundError(
      f"model weights {path} are missing: run `python -m mmkit.train` to make them."
    )
  return path


def load_model(name: str) -> nn.Module:
  """A shipped model with its weights, in eval mode."""
  cls, params = model_spec(name)
  model = cls(**params)
  model.load_state_dict(torch.load(model_path(name), map_location="cpu", weights_only=True))
  return model.eval()


def cache_dir() -> Path:
  """`$MMKIT_CACHE`, else `~/.cache/mmkit`: where synthetic models are made."""
  return Path(os.environ.get("MMKIT_CACHE") or Path.home() / ".cache" / "mmkit")


def sized_model_path(megabytes: float, index: int) -> Path:
  """State dict of SizedModel(megabytes) #index (seeded by index), made once in the cache dir."""
  path = cache_dir() / f"sized_{megabytes:g}mb_{index}.pt"
  if not path.exists():
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(index)
    state = SizedModel(megabytes, initialize=True).state_dict()
    # Write then rename: two processes asking at once never see half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)
  return path


class BenchMLP(nn.Module):
  """The bench's 3-layer MLP (`python -m mmkit bench`): 64 -> 1024 -> 1024 -> 10.

  Its layers skip random initialisation (as `SizedModel` does): every BenchMLP
  is built to receive a state dict right away, and drawing 1.1 million random weights cost
  more than loading them (`docs/fast_path.md`).
  """

  def __init__(self, initialize: bool = False):
    super().__init__()

    def linear(*shape):
      return nn.Linear(*shape) if initialize else uninitialized_linear(*shape)

    self.net = nn.Sequential(
      linear(64, 1024), nn.ReLU(), linear(1024, 1024), nn.ReLU(), linear(1024, 10)
    )

  def forward(self, x):
    return self.net(x)


@lru_cache(maxsize=None)
def bench_model_path(index: int = 0) -> str:
  """State dict of BenchMLP #index (seeded), written once to the temp dir (`mmkit.benchmark`)."""
  path = os.path.join(tempfile.gettempdir(), f"mmkit-bench-mlp-{index}.pt")
  if not os.path.exists(path):
    torch.manual_seed(index)
    # Write then rename: a second process asking at once never reads half a file.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    os.close(fd)
    torch.save(BenchMLP(initialize=True).state_dict(), tmp)
    os.replace(tmp, path)
  return path


def load_bench_model(index: int = 0) -> nn.Module:
  """BenchMLP #index with its weights, in eval mode."""
  model = BenchMLP()
  model.load_state_dict(torch.load(bench_model_path(index), weights_only=True))
  return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
  """Predicted labels of a model for float32 [N, 64] digits."""
  return model(torch.as_tensor(x, dtype=torch.float32)).argmax(dim=1).numpy()
