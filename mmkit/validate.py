"""Check a multi-model set-up before Beam runs it: clear errors, not deep tracebacks (02, 03).

Every check raises `mmkit.core.keyed.SetupError` (a ValueError) whose message names the problem
and the fix.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

from mmkit.core.keyed import SetupError

__all__ = [
  "check_state_dict",
  "check_input_shape",
  "check_sequence",
]


def check_state_dict(
  path: str, model_class: type, model_params: Optional[Mapping[str, Any]] = None
) -> None:
  """The file exists, is a state dict, and loads into `model_class(**model_params)` exactly."""
  import torch

  if not os.path.exists(path):
    raise SetupError(
      f"model file {path} does not exist: check the path, or run `python -m mmkit.train` "
      "to make the kit's models."
    )
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # pickle, zip and torch errors all mean "not a state dict"
    raise SetupError(
      f"model file {path} is not a torch state dict ({type(error).__name__}): save one with "
      "torch.save(model.state_dict(), path)."
    ) from None
  if not isinstance(state, Mapping):
    raise SetupError(
      f"model file {path} holds a {type(state).__name__}, not a state dict: save "
      "model.state_dict(), not the model."
    )
  model = model_class(**dict(model_params or {}))
  try:
    model.load_state_dict(state, strict=True)
  except RuntimeError as error:
    detail = " ".join(str(error).split())[:400]
    raise SetupError(
      f"model file {path} does not fit {model_class.__name__}({_params(model_params)}): "
      f"{detail}. Pass the model_class and model_params the file was saved from."
    ) from None


def _named_model(stage: Any) -> tuple[str, Any]:
  """(name, model) of a stage of `check_sequence`; a shipped model's name is loaded."""
  if isinstance(stage, str):
    from mmkit.models import load_model

    return stage, load_model(stage)
  if isinstance(stage, tuple):
    return stage
  return type(stage).__name__, stage


def _params(params: Optional[Mapping[str, Any]]) -> str:
  return ", ".join(f"{k}={v!r}" for k, v in (params or {}).items())


def check_input_shape(model: Any, example_shape: Sequence[int]) -> None:
  """One zero example of `example_shape` goes through `model` (in batch of one) without error."""
  check_sequence([model], example_shape)


def check_sequence(stages: Sequence[Any], example_shape: Sequence[int] = (64,)) -> None:
  """Each stage takes the previous one's output (the first, `example_shape`) (02).

  A stage is a model, a `(name, model)` pair, or the name of a model the kit ships
  (`mmkit.models`). A sequence `A | post-process | B` breaks at B when A's output does not
  fit it; Beam would only say so mid-run, from inside B's batch. Post-processing is assumed
  to keep the shape.
  """
  import torch

  stages = [_named_model(stage) for stage in stages]
  example, source = torch.zeros((1, *example_shape)), f"examples of shape {tuple(example_shape)} do"
  fix = "Reshape the inputs in a beam.Map before RunInference"
  for name, model in stages:
    try:
      with torch.no_grad():
        output = model(example)
    except RuntimeError as error:
      detail = " ".join(str(error).split())[:300]
      raise SetupError(f"{source} not fit {name}: {detail}. {fix}.") from None
    example, source = output, f"the output of {name} (shape {tuple(output.shape[1:])}) does"
    fix = "Put a model whose input fits there, or reshape in the post-processing beam.Map before it"
