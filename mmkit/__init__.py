"""mmkit: teach and measure Apache Beam RunInference with several models.

The notebooks in `notebooks/` tell the story. The code they use comes in two layers (the
notebook that teaches each module in brackets).

The core, `mmkit.core`: what a user copies into a pipeline. Each module imports only the
standard library, Beam, torch and numpy, plus `beam_private.py` where it needs Beam's private
names; `tests/test_core_copy.py` copies each one alone and runs its example.

- `core.keyed`: a KeyedModelHandler with fixed batches, the hint added once per process, a
  failed model load survived, and dead letters instead of failed batches (03, 04, 05).
- `core.tracer`: every model load and release of any pipeline, in any process (04).
- `core.cleanup`: freeing what a Beam run leaves behind (models, their servers and files, heap
  memory) (04).
- `core.capacity`: the hint a worker's memory allows (04).
- `core.simulate`: Beam's LRU replayed without Beam, Belady's optimum, working sets (04, 05).
- `core.mmap_load`: a PyTorch handler that maps the state dict instead of copying it: cheap
  swaps (05).
- `core.beam_private`: every private name of Beam's the kit reads, behind a version check; and
  Nagle's 40 ms waits taken off Beam's shared-model sockets (03, 04, 05).

The lab: what measures, runs and draws on top of the core.

- `data`: the offline digits, their cohorts ("sources"), the models' keys and key streams (03).
- `inputs`: the elements a pipeline is fed and the DoFns that make tensors of them in the
  worker, from one cached tensor per cohort (01, 02, 03, 06).
- `models`: the small torch models, their shipped weights, models of a chosen size (01-06).
- `train`: `python -m mmkit.train`, which makes the shipped weights (data/README.md).
- `settings`: a run's settings as one value (`KeyedRun`): defaults, checks, the sweep's
  options, without Beam or torch (03, 04).
- `patterns`: shipped handlers, splits and scores for A/B, sequences, keyed models and
  ensembles (01, 02, 03, 06).
- `stats`: paired McNemar tests and Wilson intervals for comparing models (01, 03, 06).
- `validate`: errors that name the fix before a run (02, 03).
- `pipelines`: runner options and the keyed pipeline pieces shared by notebooks
  and the CLI (03, 04).
- `report`: what one traced run did, as one typed value (`RunReport`) (04).
- `memwatch`: the memory of the process tree, sampled from a process of its own (04).
- `beam_metrics`: Beam's own keyed-model metrics, read from a pipeline result (03, 04).
- `plots`: the kit's figures: loads and memory against the hint, memory over a run, digits (02-04).
- `diagrams`: the picture of the pipeline a notebook runs, drawn from the pipeline object by
  Beam's own graph and Graphviz, as a PNG that GitHub shows (01, 02, 03, 04, 05).
- `streaming`: a keyed stream with event times replayed by `TestStream`, windows before
  `GroupByKey`, and the latency they add (07).
- `experiment`, `explorer`, `workers`: one traced run, the hint widget, and stopping a run
  cleanly (04).
- `faults`: a run that fails part-way (memory limit passed, worker killed, model file gone)
  says why in one line and keeps its partial report (04).
- `sweep`: `python -m mmkit sweep`, the main job: one traced run per hint (04).
- `benchmark`, `fastpath`: `python -m mmkit bench` and the fast way of feeding RunInference it
  measures (01).
- `notebook`: quiet imports, plot defaults and `claim` checks for every notebook.
"""

__version__ = "0.1.0"
