"""The fast recipe gives the same predictions as the plain per-element pipeline, row for row."""

import apache_beam as beam
import pytest
import torch
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from apache_beam.testing.util import assert_that, equal_to

from mmkit import fastpath
from mmkit.models import BenchMLP, bench_model_path

N, BLOCK = 2500, 512  # the last block is short on purpose


def _plain_labels(p, rows, model_path):
  """Row index -> predicted label, the way most examples write it (one element per row)."""
  return (
    p
    | "PlainRows" >> beam.Create([(i, rows.block(i, i + 1)[0]) for i in range(N)])
    | "Plain"
    >> RunInference(
      KeyedModelHandler(
        PytorchModelHandlerTensor(
          state_dict_path=model_path, model_class=BenchMLP, model_params={}, device="CPU"
        )
      )
    )
    | "PlainLabels" >> beam.MapTuple(lambda i, r: (i, int(r.inference.argmax())))
  )


def _expected(rows, model_path):
  model = BenchMLP()
  model.load_state_dict(torch.load(model_path, weights_only=True))
  with torch.no_grad():
    return model.eval()(rows.block(0, N)).argmax(1).tolist()


def test_single_model_blocks_predict_what_the_plain_pipeline_predicts():
  rows = fastpath.RowsOf("clean", N)
  path = bench_model_path(0)
  starts = {
    tuple(rows.block(lo, lo + 1)[0].tolist()): lo for lo, _ in fastpath.index_ranges(N, BLOCK)
  }

  def per_row(result):
    start = starts[tuple(result.example[0].tolist())]
    return [(start + j, int(label)) for j, label in enumerate(result.inference.argmax(1))]

  with beam.Pipeline(runner=fastpath.RUNNER) as p:
    fast = (
      p
      | "Ranges" >> beam.Create(fastpath.index_ranges(N, BLOCK))
      | beam.ParDo(fastpath.BuildBlock(rows))
      | RunInference(fastpath.block_handler(path, BenchMLP))
      | beam.FlatMap(per_row)
    )
    plain = _plain_labels(p, rows, path)
    # The same (row, label) pairs, and both equal to the model run directly.
    expected = list(enumerate(_expected(rows, path)))
    assert_that(fast, equal_to(expected), label="fast")
    assert_that(plain, equal_to(expected), label="plain")


# 5 blocks of 3 keys, round robin (k0 k1 k2 k0 k1): one batch holding every key (the
# handler serves k0, k1, k2 in turn: 3 loads with hint=1), batches of 2 and a short last one,
# one block per batch (with hint=1: a load per block), and Beam's cross-process manager.
@pytest.mark.parametrize(
  "blocks_per_batch, hint, share, loads",
  [(32, 1, False, 3), (2, None, False, 3), (1, 1, False, 5), (1, None, False, 3), (32, 1, True, 3)],
)
def test_keyed_blocks_are_served_by_their_keys_model(blocks_per_batch, hint, share, loads):
  from mmkit.beam_metrics import beam_load_counts

  rows = fastpath.RowsOf("random", N)
  paths = {f"k{i}": bench_model_path(i) for i in range(3)}
  ranges = fastpath.index_ranges(N, BLOCK)
  elements = [(f"k{b % 3}", r) for b, r in enumerate(ranges)]
  expected = []
  for key, (lo, hi) in elements:
    model = BenchMLP()
    model.load_state_dict(torch.load(paths[key], weights_only=True))
    with torch.no_grad():
      expected.append((key, lo, paths[key], model.eval()(rows.block(lo, hi)).argmax(1).tolist()))
  first_rows = {tuple(rows.block(lo, lo + 1)[0].tolist()): lo for lo, _ in ranges}
  handler = fastpath.keyed_block_handler(
    paths, BenchMLP, hint=hint, blocks_per_batch=blocks_per_batch, share_across_processes=share
  )
  assert handler.share_model_across_processes() is share

  def served(key, result):
    first_row = first_rows[tuple(result.example[0].tolist())]
    return key, first_row, result.model_id, result.inference.argmax(1).tolist()

  p = beam.Pipeline(runner=fastpath.RUNNER)
  out = (
    p
    | beam.Create(elements, reshuffle=False)
    | beam.ParDo(fastpath.BuildBlock(rows, keyed=True))
    | RunInference(handler)
    | beam.MapTuple(served)
  )
  assert_that(out, equal_to(expected))
  result = p.run()
  result.wait_until_finish()
  # The model manager's LRU and the hint hold wherever the manager lives.
  assert beam_load_counts(result)["*"] == loads


def test_ranges_cover_every_row_once():
  assert fastpath.index_ranges(5, 2) == [(0, 2), (2, 4), (4, 5)]
  with pytest.raises(ValueError, match="block"):
    fastpath.index_ranges(5, 0)
