"""The offline digits, their keyed cohorts ("sources") and key streams (taught in 03_keyed_models).

The same 1,797 handwritten digits are seen through different sources (a clean scanner, a
noisy one, a rotated camera, ...): one cohort per source, one specialist model per cohort.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
  "SOURCES",
  "STREAMS",
  "SPLITS",
  "data_dir",
  "load_digits",
  "apply_source",
  "split_indices",
  "cohort",
  "key_stream",
  "model_keys",
  "source_of",
]

SOURCES = ("clean", "noisy", "rotated", "inverted", "blurred", "shifted", "flipped", "dimmed")
STREAMS = ("uniform", "zipf", "cycle", "sorted")
SPLITS = ("train", "test", "all")


def data_dir() -> Path:
  """`$MMKIT_DATA`, else the repository's `data/` folder."""
  return Path(os.environ.get("MMKIT_DATA") or Path(__file__).resolve().parents[1] / "data")


@lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """Images as float32 [N, 64] in 0..1, labels int64 [N]."""
  path = data_dir() / "digits.npz"
  if not path.exists():
    raise FileNotFoundError(
      f"{path} is missing: run from a clone of the mmkit repository or set "
      "MMKIT_DATA to a folder holding digits.npz."
    )
  with np.load(path) as arrays:
    images = arrays["images"].reshape(len(arrays["images"]), 64).astype(np.float32) / 16.0
    labels = arrays["labels"].astype(np.int64)
  images.flags.writeable = labels.flags.writeable = False  # shared by every caller
  return images, labels


def _grid(images: np.ndarray) -> np.ndarray:
  return images.reshape(-1, 8, 8)


def _blur(grid: np.ndarray) -> np.ndarray:
  padded = np.pad(grid, ((0, 0), (1, 1), (1, 1)))
  return sum(padded[:, i : i + 8, j : j + 8] for i in range(3) for j in range(3)) / 9.0


def apply_source(source: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
  """The digits as `source` would capture them: float32 [N, 64] in, the same shape out."""
  grid = _grid(np.asarray(images, dtype=np.float32))
  if source == "clean":
    out = grid
  elif source == "noisy":
    out = np.clip(grid + np.random.default_rng(seed).normal(0.0, 0.35, grid.shape), 0.0, 1.0)
  elif source == "rotated":
    out = np.rot90(grid, k=1, axes=(1, 2))
  elif source == "inverted":
    out = 1.0 - grid
  elif source == "blurred":
    out = _blur(_blur(grid))
  elif source == "shifted":
    out = np.roll(grid, shift=(2, 2), axis=(1, 2))
  elif source == "flipped":
    out = grid[:, ::-1, :]
  elif source == "dimmed":
    out = 0.3 + 0.25 * grid
  else:
    raise ValueError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}.")
  return np.ascontiguousarray(out.reshape(-1, 64), dtype=np.float32)


@lru_cache(maxsize=None)
def split_indices(split: str) -> np.ndarray:
  """Row indices of a fixed 70/30 train/test split (`all`: every row)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}.")
  n = len(load_digits()[1])
  order = np.random.default_rng(1234).permutation(n)
  cut = int(0.7 * n)
  chosen = {"train": order[:cut], "test": order[cut:], "all": np.arange(n)}[split]
  return np.sort(chosen)


@lru_cache(maxsize=None)
def cohort(source: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
  """(images [n, 64], labels [n]) of one split seen through one source."""
  images, labels = load_digits()
  rows = split_indices(split)
  seed = SOURCES.index(source) if source in SOURCES else 0
  x = apply_source(source, images[rows], seed=seed + SPLITS.index(split) * 100)
  x.flags.writeable = False
  return x, labels[rows]


def key_stream(kind: str, keys: Sequence[str], n: int, seed: int = 0) -> list[str]:
  """The order in which keyed elements arrive: `uniform`, `zipf` (skewed), `cycle`, `sorted`."""
  keys = list(keys)
  if not keys:
    raise ValueError("key_stream needs at least one key.")
  rng = np.random.default_rng(seed)
  if kind == "uniform":
    return [keys[i] for i in rng.integers(0, len(keys), size=n)]
  if kind in ("zipf", "sorted"):
    weights = 1.0 / np.arange(1, len(keys) + 1) ** 1.2
    picks = rng.choice(len(keys), size=n, p=weights / weights.sum())
    return [keys[i] for i in (np.sort(picks) if kind == "sorted" else picks)]
  if kind == "cycle":
    return [keys[i % len(keys)] for i in range(n)]
  raise ValueError(f"unknown stream {kind!r}: use one of {', '.join(STREAMS)}.")


def model_keys(models: int) -> list[str]:
  """Keys for `models` keyed models: the data sources, then `<source>-<n>` once they run out."""
  n = len(SOURCES)
  return [SOURCES[i % n] + ("" if i < n else f"-{i // n}") for i in range(models)]


def source_of(key: str) -> str:
  """The data source (cohort) whose digits a key's elements carry."""
  return key.split("-")[0]
