"""mmkit: teach and measure Apache Beam RunInference with several models.

The notebooks in `notebooks/` tell the story; each module here holds the code they reuse
(the notebook that teaches it in brackets):

- `data`: the offline digits, their cohorts ("sources"), the models' keys and key streams (03).
- `inputs`: the elements a pipeline is fed and the DoFns that make tensors of them in the
  worker, from one cached tensor per cohort (01, 02, 03, 06).
- `models`: the small torch models, their shipped weights, models of a chosen size (01-06).
- `train`: `python -m mmkit.train`, which makes the shipped weights (data/README.md).
- `settings`: a run's settings as one value (`KeyedRun`): defaults, checks, runner and grouping
  names, without Beam or torch (03, 04).
- `patterns`: shipped handlers, splits and scores for A/B, sequences, keyed models and
  ensembles (01, 02, 03, 06).
- `keyed`: a KeyedModelHandler with reproducible batching, telling what Beam's manager
  decides (03, 04).
- `cleanup`: freeing what a Beam run leaves behind (models, their servers and files, heap
  memory, worker processes), on every path out of a run (04).
- `validate`: errors that name the fix before a run (02, 03).
- `deadletter`: elements that cannot be served, kept with the reason during a run (03).
- `pipelines`: runner options and the keyed pipeline pieces shared by notebooks
  and the CLI (03, 04).
- `tracing`, `memwatch`: every model load, eviction and release, the memory of the process
  tree (sampled from a process of its own) (04).
- `beam_metrics`: Beam's own keyed-model metrics, read from a pipeline result (03, 04).
- `plots`: the kit's figures: loads and memory against the hint, memory over a run, digits (02-04).
- `simulate`: Beam's LRU replayed without Beam, Belady's optimum, working sets (04, 05).
- `mmap_load`: a PyTorch handler that maps the state dict instead of copying it: cheap swaps
  (05).
- `streaming`: a keyed stream with event times replayed by `TestStream`, windows before
  `GroupByKey`, and the latency they add (07).
- `experiment`, `explorer`, `capacity`, `workers`: one traced run, the hint widget, sizing a
  worker, and stopping a run cleanly (04).
- `sockets`: Beam's shared-model connections without Nagle's 40 ms waits, in every process that
  uses the kit's keyed handler (04).
- `faults`: a run that fails part-way (memory limit passed, worker killed, model file gone)
  says why in one line and keeps its partial report (04).
- `sweep`: `python -m mmkit sweep`, the main job: one traced run per hint (04).
- `benchmark`, `fastpath`: `python -m mmkit bench` and the fast way of feeding RunInference it
  measures (01).
- `notebook`: quiet imports and plot defaults for every notebook.
"""

__version__ = "0.1.0"
