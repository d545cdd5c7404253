"""The benchmark machinery (timings are reported, never asserted)."""

import numpy as np

from boundlab.benchmarks import rounding_benchmark, time_call


def test_time_call_reports_best_and_first_call():
    best, first = time_call(lambda: np.ones(10), repeats=3)
    assert 0 < best and 0 < first


def test_rounding_benchmark_rows_share_one_baseline():
    rows = rounding_benchmark(size=10_000, fmt="bf16", repeats=1, peers=False)
    baseline = rows[0]
    assert baseline.ratio == 1.0
    for row in rows[1:]:
        assert row.seconds > 0 and row.ratio is not None


def test_forward_benchmark_rows_are_ratios_to_exact():
    from boundlab.benchmarks import forward_benchmark

    rows = forward_benchmark(batch=4, d=3, n=3, D=3, L=2, repeats=1)
    assert [r.name.split()[1] for r in rows] == ["Exact()", "Emulated(t10,", "Emulated(t10,"]
    assert rows[0].ratio == 1.0 and all(r.seconds > 0 for r in rows)


def test_figure1_benchmark_times_the_sweep_against_float64():
    from boundlab.benchmarks import figure1_benchmark

    rows = figure1_benchmark(inits=6, L=2, d=3, precisions=(10, 16), chunk=4, bound_samples=0)
    assert rows[0].ratio == 1.0 and len(rows) == 2
    assert all(r.seconds > 0 for r in rows) and "compilation included" in rows[1].note
