"""Beam's own keyed-model metrics, read from a pipeline result in one place (03, 04).

A `KeyedModelHandler` reports in the `BeamML_KeyedModels` namespace: the unprefixed metrics
cover all keys, `<cohort>-_<metric>` ones a cohort each (docs/beam_findings.md). Runners
without metrics (the InteractiveRunner) give None.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["ALL", "keyed_model_metrics", "beam_load_counts", "keyed_metrics_frame"]

ALL = "*"  # the cohort name under which the unprefixed metrics (all keys) are read


def keyed_model_metrics(result: Any) -> Optional[dict[str, dict[str, int]]]:
  """{cohort: {metric: value}} of a pipeline result, `ALL` for all keys; None without metrics.

  A counter gives its value; a distribution its count, as `<metric> (count)`. Values of the
  same metric in several steps are added.
  """
  if result is None:
    return None
  try:
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace("BeamML_KeyedModels"))
  except (NotImplementedError, AttributeError):
    return None  # InteractiveRunner results have no metrics.
  metrics: dict[str, dict[str, int]] = {}
  for kind in ("counters", "distributions"):
    for m in query[kind]:
      cohort, _, metric = m.key.metric.name.rpartition("-_")
      value = m.committed if m.committed is not None else m.attempted
      if kind == "distributions":
        value, metric = (value.count if value else 0), f"{metric} (count)"
      row = metrics.setdefault(cohort or ALL, {})
      row[metric] = row.get(metric, 0) + value
  return metrics


def beam_load_counts(result: Any) -> Optional[dict]:
  """Beam's own model-load counts, {cohort: loads} (`ALL`: every load), or None without metrics.

  Counts the `load_model_latency_milli_secs` distributions: one entry per model load.
  """
  metrics = keyed_model_metrics(result)
  if metrics is None:
    return None
  loads = "load_model_latency_milli_secs (count)"
  return {cohort: row[loads] for cohort, row in metrics.items() if loads in row}


def keyed_metrics_frame(result):
  """Beam's per-cohort keyed-model metrics (DirectRunner result) as a DataFrame (03)."""
  import pandas as pd

  rows = {
    "(all)" if cohort == ALL else cohort: row
    for cohort, row in (keyed_model_metrics(result) or {}).items()
  }
  frame = pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int)
  wanted = [
    "num_inferences",
    "load_model_latency_milli_secs (count)",
    "inference_batch_latency_micro_secs (count)",
  ]
  return frame[[c for c in wanted if c in frame]].sort_index()
