"""mmkit: teach and measure Apache Beam RunInference with several models.

The notebooks in `notebooks/` tell the story; each module here holds the code they reuse:

- `data`: the offline digits, their keyed cohorts ("sources") and key streams.
- `models`: the small torch models, the shipped weights and synthetic models of a chosen size.
- `tracing`: records every model load and release, and the memory of the process tree.
- `keyed`: a KeyedModelHandler with reproducible batching; freeing models Beam keeps.
- `pipelines`: runner options and pipeline pieces shared by notebooks and the CLI.
- `experiment`: one traced keyed run; `sweep`: the main job, `python -m mmkit sweep`.
- `plots`: the pictures.
"""
__version__ = "0.1.0"
