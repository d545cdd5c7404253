"""The benchmark machinery (timings are reported, never asserted)."""

import numpy as np
import pytest

from boundlab.bench import rounding_benchmark, time_call

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py


def test_time_call_reports_best_and_first_call():
    best, first = time_call(lambda: np.ones(10), repeats=3)
    assert 0 < best and 0 < first


def test_rounding_benchmark_rows_share_one_baseline():
    rows = rounding_benchmark(size=10_000, fmt="bf16", repeats=1, peers=False)
    baseline = rows[0]
    float32_copy = next(r for r in rows if r.name == "jit(x * 1.0) float32")
    for row in rows[1:]:  # every ratio is to a baseline timed in the same run
        base = float32_copy if "float32 copy" in row.note else baseline
        assert row.seconds > 0 and row.ratio == pytest.approx(row.seconds / base.seconds)


def test_forward_benchmark_rows_are_ratios_to_exact():
    from boundlab.bench import forward_benchmark

    rows = forward_benchmark(batch=4, d=3, n=3, D=3, L=2, repeats=1)
    assert [r.name.split()[1] for r in rows] == ["Exact()", "Emulated(t10,", "Emulated(t10,"]
    assert all(r.seconds > 0 and r.ratio == pytest.approx(r.seconds / rows[0].seconds) for r in rows[1:])


def test_figure1_benchmark_times_the_sweep_against_float64():
    from boundlab.bench import figure1_benchmark

    rows = figure1_benchmark(inits=6, L=2, d=3, precisions=(10, 16), chunk=4, bound_samples=0, first_order_samples=0)
    assert len(rows) == 2 and rows[1].ratio == pytest.approx(rows[1].seconds / rows[0].seconds)
    assert all(r.seconds > 0 for r in rows) and "compilation included" in rows[1].note


def test_figure1_benchmark_times_the_first_order_samples_apart_from_the_theorem(monkeypatch):
    # the three-way comparison's autodiff samples once hid in the Theorem 4.30 row (337 s of it)
    import boundlab.experiments
    from boundlab.bench import figure1_benchmark

    configs = []
    monkeypatch.setattr(boundlab.experiments, "figure1", lambda config, progress: configs.append(config))
    monkeypatch.setattr("boundlab.experiments.sweeps.sweep", lambda *args, **kwargs: None)
    rows = figure1_benchmark(inits=6, L=2, d=3, precisions=(10, 16), chunk=4, bound_samples=5, first_order_samples=2)
    assert [row.name for row in rows[2:]] == ["Theorem 4.30 on 5 inits (+ their sweep)",
                                              "autodiff first-order bound on 2 inits (+ Theorem 4.30, sweep)"]
    assert [(c.inits, c.bound_samples, c.first_order_samples) for c in configs] == [(6, 0, 0), (5, 5, 0), (2, 2, 2)]


def test_figure1_benchmark_keeps_its_sweep_rows_when_first_order_cannot_run(monkeypatch):
    # on jax 0.11.2 (a lent H200) emulate's interpreter refused lax.scan and the whole section,
    # its goal row included, was lost; now the first-order row says why and the rest stays
    import math

    import boundlab.experiments
    from boundlab.bench import figure1_benchmark

    def figure1(config, progress):
        if config.first_order_samples:
            raise NotImplementedError("boundlab.emulate reads lax.scan's num_consts")

    monkeypatch.setattr(boundlab.experiments, "figure1", figure1)
    monkeypatch.setattr("boundlab.experiments.sweeps.sweep", lambda *args, **kwargs: None)
    rows = figure1_benchmark(inits=6, L=2, d=3, precisions=(10, 16), chunk=4, bound_samples=5, first_order_samples=2)
    assert [row.name for row in rows[:2]] == ["float64 forward of the same inits", "Figure 1 sweep, all precisions"]
    assert math.isnan(rows[-1].seconds) and rows[-1].ratio is None and "num_consts" in rows[-1].note


def test_analyze_benchmark_times_analyze_beside_one_forward(monkeypatch):
    import boundlab.analysis
    from boundlab.bench import analyze_benchmark

    calls = []

    def analyze(params, X, fmt, conditions=True):  # the timing machinery, not analyze itself
        calls.append((X.shape, fmt, conditions))
        return type("Result", (), {"raw": X})()

    monkeypatch.setattr(boundlab.analysis, "analyze", analyze)
    rows = analyze_benchmark(d=3, L=2, repeats=2, conditions=False)
    assert [r.name for r in rows] == ["emulated forward (t24)", "analyze (bounds and errors)"]
    assert calls == [((3, 3), "t24", False)] * 3  # one warm-up call and two timed ones
    assert rows[1].ratio == pytest.approx(rows[1].seconds / rows[0].seconds)


def test_a_row_states_its_goal_and_whether_it_is_met():
    from boundlab.bench import Timing

    assert Timing("x", 1.0, 2.0, ratio=2.5, goal_ratio=3.0).met is True
    assert Timing("x", 1.0, 2.0, ratio=3.5, goal_ratio=3.0).met is False
    assert Timing("x", 1.0, 31.0, goal_seconds=30.0).met is False  # wall time with compilation
    assert Timing("x", 1.0, 2.0).met is None and Timing("x", 1.0, 2.0).goal == ""
    row = Timing("x", 1.0, 2.0, ratio=1.4, goal_ratio=1.5).to_dict()
    assert row["goal"] == "<= 1.5x" and row["met"] is True


def test_theorem_benchmark_times_both_variants_against_the_exact_forward():
    from boundlab.bench import theorem_benchmark

    rows = theorem_benchmark(inits=2, d=3, L=2, repeats=1)
    assert rows[1].goal_ratio == 3.0 and rows[1].ratio == pytest.approx(rows[1].seconds / rows[0].seconds)


def test_user_model_rows_hold_issue_23s_goals(monkeypatch):
    # the rows as built (names, goals), without compiling the model: time_call is a stub here
    from boundlab.bench import any_model

    monkeypatch.setattr(any_model, "time_call", lambda fn, repeats: (0.5, 3.0))
    rows = any_model.user_model_rows()
    assert [r.name for r in rows] == ["user model, plain float32 call", "emulate(user model, bf16)",
                                      "first_order(user model, bf16)", "first_order(user model, bf16, lumped)",
                                      "model_diagnostics(user model, bf16)"]
    assert [r.goal for r in rows[1:3]] == ["<= 5 s", "<= 5 s"] and all(r.met for r in rows[1:3])
    assert "d = 16" in rows[0].note


def test_the_soak_rows_count_no_retracing_after_the_warm_up():
    from boundlab.bench import soak_benchmark

    # the shape and options of test_analysis's overflow case: its compiled measure is shared
    rows = soak_benchmark(calls=4, warm_up=2, loop_steps=3, every_column=False, formats=("bf16",), shape=(3, 3, 4, 2))
    assert [row.goal for row in rows] == ["<= 1.1x", "<= 1.1x"]
    for row in rows:  # fresh cases of one shape, and an nnx.jit loop: compiled once, never again
        assert "0 traces, 0 compiles" in row.note, row.note
        assert row.ratio is None or row.ratio > 0


def test_hardware_benchmark_rows_are_ratios_to_the_unit_and_match_mmasim_where_installed():
    from boundlab.bench.hardware_units import hardware_benchmark, mmasim_wgmma_fp8

    rows = hardware_benchmark(m=8, n=8, K=64, repeats=1)
    assert rows[0].ratio == 1.0 and [r.name for r in rows][1] == "boundlab, promotion every 128"
    sim = [r for r in rows if r.name.startswith("MMA-Sim")][0]
    if mmasim_wgmma_fp8() is None:
        assert "not installed" in sim.note
    else:  # the same bits as MMA-Sim on these operands
        assert sim.note.startswith("0 of 64 entries differ")


def test_training_benchmark_rows_are_ratios_to_the_native_float32_step():
    from boundlab.bench import training_benchmark

    rows = training_benchmark(recipes=("bf16-pure",), width=4, layers=1, batch=8, repeats=1)
    assert [r.name for r in rows] == ["native float32 step (jax.grad + optax, jit)", "recipe bf16-pure"]
    assert rows[0].ratio == 1.0 and all(r.ratio > 0 for r in rows)
