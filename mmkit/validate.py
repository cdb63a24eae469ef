"""Check a multi-model set-up before Beam runs it: clear errors, not deep tracebacks (02, 03).

Every check raises `SetupError` (a ValueError) whose message names the problem and the fix.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Optional, Sequence

__all__ = [
  "SetupError",
  "check_state_dict",
  "check_mappings",
  "check_hint",
  "check_input_shape",
  "check_sequence",
]


class SetupError(ValueError):
  """A model, mapping, hint or input that cannot work, found before the pipeline runs."""


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


def check_mappings(mappings: Sequence[Any]) -> None:
  """Each KeyModelMapping has keys, and no key is mapped to two models."""
  if not mappings:
    raise SetupError("no KeyModelMapping given: map at least one list of keys to a model handler.")
  owner: dict = {}
  for index, mapping in enumerate(mappings):
    if not list(mapping.keys):
      raise SetupError(
        f"KeyModelMapping #{index} has an empty key list: give it the keys its model serves, "
        "or drop it."
      )
    for key in mapping.keys:
      if owner.get(key) == index:
        # Beam 2.77 rejects this with "key ... maps to multiple model handlers", though there
        # is one handler (the Dataflow page's own example lists KEY_5 twice).
        raise SetupError(
          f"key {key!r} is listed twice in KeyModelMapping #{index}: list each key "
          "once (e.g. list(dict.fromkeys(keys)))."
        )
      if key in owner:
        raise SetupError(
          f"key {key!r} is mapped to two models (KeyModelMapping #{owner[key]} and #{index}): "
          "a key must name exactly one model; remove it from one of them."
        )
      owner[key] = index


def check_hint(hint: Any, n_models: int) -> None:
  """A hint is None or a whole number >= 1; above the number of models it only warns."""
  if hint is None:
    return
  if isinstance(hint, bool) or not isinstance(hint, int):
    raise SetupError(
      f"max_models_per_worker_hint must be a whole number, got {hint!r} "
      f"({type(hint).__name__}): e.g. max_models_per_worker_hint=2."
    )
  if hint < 1:
    raise SetupError(
      f"max_models_per_worker_hint must be >= 1, got {hint}: a worker needs room for at "
      "least the model it is serving (None means no limit)."
    )
  if hint > n_models:
    warnings.warn(
      f"max_models_per_worker_hint={hint} is above the {n_models} models mapped: it changes "
      "nothing (every model stays resident), which is fine if that is what you meant.",
      stacklevel=3,
    )


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
