"""The names a run's settings choose from: runners and groupings (03_keyed_models, 04_memory).

Nothing here imports Beam or torch, so the command line checks its arguments at once.
"""

from __future__ import annotations

__all__ = ["RUNNERS", "GROUPINGS"]

# direct: the DirectRunner in this process; multiprocess: its worker processes;
# interactive: Beam's InteractiveRunner, as in the notebooks (`mmkit.pipelines.new_pipeline`).
RUNNERS = ("direct", "multiprocess", "interactive")
# What reaches RunInference together: the stream as it comes, after a GroupByKey, or
# GroupIntoBatches per key (`mmkit.pipelines.keyed_inference_with_dead_letters`).
GROUPINGS = ("none", "gbk", "batches")
