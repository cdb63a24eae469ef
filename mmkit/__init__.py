"""mmkit: teach and measure Apache Beam RunInference with several models.

The notebooks in `notebooks/` tell the story; each module here holds the code they reuse
(the notebook that teaches it in brackets):

- `data`, `models`, `train`: the offline digits and their cohorts, the small torch models,
  the shipped weights and synthetic models of a chosen size.
- `patterns`: handlers, id-keyed elements and scores for A/B, sequences and ensembles (01, 02, 06).
- `keyed`: a KeyedModelHandler with reproducible batching; freeing what Beam keeps (03, 04).
- `validate`, `deadletter`: errors that name the fix before a run, dead letters during one (02, 03).
- `pipelines`: runner options and the keyed pipeline pieces shared by notebooks
  and the CLI (03, 04).
- `tracing`, `memwatch`, `plots`: every model load, eviction and release, the memory of the process
  tree (sampled from a process of its own), their pictures (04).
- `simulate`: Beam's LRU replayed without Beam, Belady's optimum, working sets (04, 05).
- `experiment`, `explorer`, `capacity`, `workers`: one traced run, the hint widget, sizing a
  worker, and stopping a run cleanly (04).
- `faults`: a run that fails part-way (memory limit passed, worker killed, model file gone)
  says why in one line and keeps its partial report (04).
- `sweep`, `benchmark`, `fastpath`: `python -m mmkit sweep` (the main job) and `bench` (01).
- `notebook`: quiet imports and plot defaults for every notebook.
"""

__version__ = "0.1.0"
