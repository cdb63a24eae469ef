"""`python -m mmkit bench` (mmkit.benchmark) and the model it measures (mmkit.models.BenchMLP)."""

import pytest
import torch

from mmkit import fastpath
from mmkit.models import BenchMLP, bench_model_path


def test_bench_model_skips_random_init_and_still_predicts_with_its_weights():
  path = bench_model_path(1)
  torch.manual_seed(1)
  initialized = BenchMLP(initialize=True).eval()  # the weights bench_model_path(1) holds
  loaded = BenchMLP()
  loaded.load_state_dict(torch.load(path, weights_only=True))
  x = fastpath.RowsOf("random", 64).block(0, 64)
  with torch.no_grad():
    assert torch.equal(loaded.eval()(x), initialized(x))


@pytest.mark.parametrize(
  "flag, value", [("--elements", "0"), ("--repeats", "0"), ("--threads", "0")]
)
def test_bench_refuses_bad_arguments_in_one_line(flag, value):
  import subprocess
  import sys

  proc = subprocess.run(
    [sys.executable, "-m", "mmkit", "bench", flag, value], capture_output=True, text=True
  )
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and flag in proc.stderr


def test_bench_rows_compare_each_method_with_raw_torch():
  from statistics import median

  from mmkit.benchmark import run_bench

  rows = run_bench(sizes=(2048,), example_style_max=2048, progress=False, repeats=2)
  methods = {(r["method"], r["pattern"]) for r in rows}
  assert methods == {
    ("raw_torch", "single"),
    ("kit", "single"),
    ("example_style", "single"),
    ("raw_torch", "keyed"),
    ("kit", "keyed"),
  }
  for r in rows:
    if r["seconds"] is None:  # a run that was mostly start-up has no figure without it
      assert not r["startup_included"] and r["ratio_to_raw"] is None and r["method"] != "raw_torch"
      continue
    # seconds keep 4 significant digits, so a run of a few ms still gives its rate
    assert r["elements_per_s"] == pytest.approx(r["elements"] / r["seconds"], rel=1e-3, abs=1)
    assert 0.0 <= r["others_cpu"] <= 1.0
    if r["method"] == "raw_torch":
      assert r["ratio_to_raw"] == 1.0
    elif r["startup_included"]:
      # One ratio per round, each from a raw run and a kit run measured back to back.
      assert len(r["ratios"]) == 2
      assert r["ratio_to_raw"] == pytest.approx(median(r["ratios"]), abs=2e-3)


def test_bench_runs_only_the_patterns_asked_for():
  from mmkit.benchmark import run_bench

  rows = run_bench(sizes=(1024,), example_style_max=0, progress=False, patterns=("single",))
  assert {(r["method"], r["pattern"]) for r in rows} == {("raw_torch", "single"), ("kit", "single")}
  with pytest.raises(ValueError, match="patterns"):
    run_bench(sizes=(1024,), patterns=("both",))


def test_bench_rows_give_the_median_of_round_ratios_and_the_ratio_of_the_fastest_rounds():
  from mmkit.benchmark import _rows

  # Two rounds: (raw torch (seconds, others' CPU share), {method: (kit (seconds, share), start-up)})
  rounds = [((1.0, 0.0), {"kit": ((2.0, 0.5), 0.1)}), ((3.0, 0.0), {"kit": ((1.5, 0.0), 0.1)})]
  kit = {r["startup_included"]: r for r in _rows("single", 100, rounds) if r["method"] == "kit"}
  assert kit[True]["ratios"] == [0.5, 2.0] and kit[True]["ratio_to_raw"] == 1.25
  assert kit[True]["best_ratio"] == round(1.0 / 1.5, 3)  # the fastest raw over the fastest kit
  assert kit[True]["seconds"] == 1.75 and kit[True]["others_cpu"] == 0.25
  # Without start-up: the medians, less the kit's median start-up.
  assert kit[False]["seconds"] == 1.65 and kit[False]["ratio_to_raw"] == round(2.0 / 1.65, 3)
  # A run that was mostly start-up (0.10 s, of which 0.09 s start-up): no figure, not noise.
  mostly_startup = [((0.02, 0.0), {"kit": ((0.10, 0.0), 0.09)})]
  bare = [r for r in _rows("single", 100, mostly_startup) if not r["startup_included"]]
  assert {r["method"]: r["ratio_to_raw"] for r in bare} == {"raw_torch": 1.0, "kit": None}


def test_bench_makes_the_rows_before_raw_torch_is_timed(monkeypatch):
  from mmkit import benchmark

  fastpath._rows.cache_clear()
  made_while_timed = []
  timed_raw = benchmark.raw_torch

  def raw_torch(n, keyed=False):
    misses = fastpath._rows.cache_info().misses
    seconds = timed_raw(n, keyed)
    if n == 3000:  # a round's raw torch (the warm-up runs one block)
      made_while_timed.append(fastpath._rows.cache_info().misses - misses)
    return seconds

  monkeypatch.setattr(benchmark, "raw_torch", raw_torch)
  benchmark.run_bench(sizes=(3000,), example_style_max=0, progress=False, patterns=("single",))
  assert made_while_timed == [0]  # round 1's raw torch found its rows made


def test_bench_without_start_up_keeps_every_rows_compute(monkeypatch):
  # Fakes with a known cost: 0.01 s of start-up, then 10 us a row, the same per row as raw torch.
  # Timing start-up on a whole block at 2,000 rows would subtract half the rows' compute too.
  from mmkit import benchmark

  per_row, startup = 1e-5, 0.01
  monkeypatch.setattr(benchmark, "raw_torch", lambda n, keyed=False: n * per_row)
  monkeypatch.setattr(benchmark, "kit", lambda n, keyed=False: startup + n * per_row)
  monkeypatch.setattr(benchmark, "example_style", lambda n: startup + n * 10 * per_row)
  rows = benchmark.run_bench(sizes=(2000,), example_style_max=2000, progress=False)
  bare = {r["method"]: r for r in rows if r["pattern"] == "single" and not r["startup_included"]}
  assert bare["kit"]["ratio_to_raw"] == pytest.approx(1.0, abs=0.01)
  assert bare["example_style"]["ratio_to_raw"] == pytest.approx(0.1, abs=0.01)
