"""Train the shipped models deterministically: `python -m mmkit.train [--out DIR]` (data/README.md).

Writes `<name>.pt` state dicts and `metrics.json` (accuracies) to `data/models/`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from mmkit import data
from mmkit.models import MODEL_ZOO, model_spec, models_dir

__all__ = ["EPOCHS", "BATCH", "LR", "accuracy", "train_all", "main"]

EPOCHS, BATCH, LR = 60, 64, 3e-3


def _fit(
  model: nn.Module, x: np.ndarray, target: np.ndarray, loss_fn: nn.Module, seed: int
) -> nn.Module:
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  x_t, y_t = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(target))
  opt = torch.optim.Adam(model.parameters(), lr=LR)
  model.train()
  for _ in range(EPOCHS):
    for rows in torch.randperm(len(x_t), generator=gen).split(BATCH):
      opt.zero_grad()
      loss_fn(model(x_t[rows]), y_t[rows]).backward()
      opt.step()
  return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
  """Share of correct predictions, rounded to 4 places."""
  return round(float((model(torch.from_numpy(np.array(x))).argmax(1).numpy() == y).mean()), 4)


def _new(name: str, seed: int) -> nn.Module:
  torch.manual_seed(seed)
  cls, params = model_spec(name)
  return cls(**params)


def train_all(out: Optional[Path] = None) -> dict:
  """Trains every model of MODEL_ZOO; saves them and metrics.json to `out`; returns the metrics."""
  out = Path(out or models_dir())
  out.mkdir(parents=True, exist_ok=True)
  torch.set_num_threads(1)
  torch.use_deterministic_algorithms(True)
  xent = nn.CrossEntropyLoss()
  trained: dict[str, nn.Module] = {}
  for seed, name in enumerate(MODEL_ZOO):
    if name == "denoiser":
      noisy, _ = data.cohort("noisy", "train")
      clean, _ = data.cohort("clean", "train")
      trained[name] = _fit(_new(name, seed), noisy, clean, nn.MSELoss(), seed)
    else:
      source = name.removeprefix("specialist_") if name.startswith("specialist_") else "clean"
      x, y = data.cohort(source, "train")
      trained[name] = _fit(_new(name, seed), x, y, xent, seed)
    torch.save(trained[name].state_dict(), out / f"{name}.pt")

  metrics: dict = {"models": {}, "cohorts": {}, "sequence": {}}
  for name, model in trained.items():
    source = name.removeprefix("specialist_") if name.startswith("specialist_") else "clean"
    entry = {
      "architecture": type(model).__name__,
      "parameters": sum(p.numel() for p in model.parameters()),
      "file_bytes": (out / f"{name}.pt").stat().st_size,
      "sha256": hashlib.sha256((out / f"{name}.pt").read_bytes()).hexdigest()[:16],
      "trained_on": "noisy -> clean" if name == "denoiser" else source,
    }
    if name != "denoiser":
      entry["test_accuracy"] = accuracy(model, *data.cohort(source, "test"))
    metrics["models"][name] = entry
  for source in data.SOURCES:
    x, y = data.cohort(source, "test")
    metrics["cohorts"][source] = {
      "general": accuracy(trained["general"], x, y),
      "specialist": accuracy(trained[f"specialist_{source}"], x, y),
    }
  noisy_x, noisy_y = data.cohort("noisy", "test")
  with torch.no_grad():
    denoised = trained["denoiser"](torch.from_numpy(np.array(noisy_x))).numpy()
  metrics["sequence"] = {
    "classifier": "ab_mlp",
    "noisy_without_denoiser": accuracy(trained["ab_mlp"], noisy_x, noisy_y),
    "noisy_with_denoiser": accuracy(trained["ab_mlp"], denoised, noisy_y),
  }
  (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
  return metrics


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m mmkit.train", description=__doc__.splitlines()[0]
  )
  parser.add_argument(
    "--out", type=Path, default=None, help="folder for the state dicts (default data/models)"
  )
  args = parser.parse_args(argv)
  start = time.time()
  metrics = train_all(args.out)
  print(f"{'model':24} {'architecture':15} {'params':>7} {'test accuracy':>14}")
  for name, m in metrics["models"].items():
    print(
      f"{name:24} {m['architecture']:15} {m['parameters']:>7} {m.get('test_accuracy', '-'):>14}"
    )
  print("\ncohort      general  specialist")
  for source, acc in metrics["cohorts"].items():
    print(f"{source:10} {acc['general']:8.3f} {acc['specialist']:11.3f}")
  s = metrics["sequence"]
  print(
    f"\nnoisy digits, ab_mlp alone: {s['noisy_without_denoiser']:.3f}; "
    f"denoiser then ab_mlp: {s['noisy_with_denoiser']:.3f}"
  )
  print(f"trained in {time.time() - start:.1f} s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
