"""Sweeps and Figures 1-4: determinism across chunks and devices, exactness at t = 53, the
figures' data, fits and files, and the acceptance checks of the quick figures."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boundlab import Emulated, Exact
from boundlab.cli import main
from boundlab.experiments import Figure1, Figure2, Figure3, Figure4, figure1
from boundlab.experiments.per_layer import layer_errors, post_norm_block
from boundlab.experiments.reproduce import reproduce
from boundlab.experiments.stats import growth_fit, power_fit
from boundlab.experiments.sweeps import sweep
from boundlab.models.paper import init, layer_norm, perceptron
from boundlab.models.paper import attention as attention_fn

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

SWEEP_SOURCE = """
import jax, jax.numpy as jnp
from boundlab import Emulated
from boundlab.experiments.per_layer import layer_errors
from boundlab.experiments.sweeps import sweep
from boundlab.models.paper import init
ARITHMETICS = (Emulated("t10", unroll=0),)
def one(key, index):
    params, X = init(key, "figure1", d=3, n=4, D=5, L=2)
    narrow = Emulated("t10")
    params, X = jax.tree.map(lambda a: jnp.asarray(narrow.cast(a), jnp.float64), (params, X))
    return layer_errors(params, X, ARITHMETICS, "layer")["normwise"]
"""


def _sweep_function():
    namespace = {}
    exec(SWEEP_SOURCE, namespace)  # the same function here and in the 4-device subprocess
    return namespace["one"]


def test_sweep_results_do_not_depend_on_the_chunk_size_or_the_device_count(tmp_path):
    one = _sweep_function()
    reference = sweep(one, jax.random.key(3), 10, chunk=10, progress=False)
    np.testing.assert_array_equal(sweep(one, jax.random.key(3), 10, chunk=4, progress=False), reference)
    assert reference.shape == (10, 1, 2) and np.all(reference > 0)
    script = tmp_path / "four.py"
    script.write_text(SWEEP_SOURCE + textwrap.dedent(f"""
        import numpy as np
        jax.config.update("jax_enable_x64", True)
        assert len(jax.devices()) == 4, jax.devices()
        out = sweep(one, jax.random.key(3), 10, chunk=6, progress=False)
        np.save({str(tmp_path / 'four.npy')!r}, out)
    """))
    # compiled with the same optimisation effort as the reference (tests/conftest.py)
    effort = str(int(jax.config.read("jax_disable_most_optimizations")))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": effort}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=600)
    np.testing.assert_array_equal(np.load(tmp_path / "four.npy"), reference)


def test_layer_errors_are_zero_at_53_bits_and_flag_overflow_as_nan():
    params, X = init(jax.random.key(0), "figure4", d=4, n=3, D=5, L=3)
    for post_norm, norm in ((True, "layer"),):
        errors = layer_errors(params, X, (Emulated("t53", accumulation="recursive"),), norm, post_norm=post_norm,
                              exact=Exact("recursive"))
        assert np.all(np.asarray(errors["componentwise"]) == 0) and errors["normwise"].shape == (1, 3)
    t10 = Emulated("t10", unroll=0)
    rounded, X10 = jax.tree.map(lambda a: jnp.asarray(t10.cast(a), jnp.float64), (params, X * 1e3))
    huge = layer_errors(rounded, X10, (t10,), "layer", post_norm=True)  # raw attention: exp overflows
    assert np.isnan(np.asarray(huge["normwise"])).any()
    with pytest.raises(ValueError, match="narrowest"):
        layer_errors(params, X, (t10,), "layer")


def test_post_norm_block_normalises_the_attention_output():
    params, X = init(jax.random.key(1), "figure4", d=4, n=3, D=5, L=1)
    layer = jax.tree.map(lambda a: a[0], params)
    Y = X + layer_norm(attention_fn(X, layer.Wq, layer.Wk, layer.Wv))
    want = Y + perceptron(layer_norm(Y), layer.A1, layer.b1, layer.A2, layer.b2)
    got = post_norm_block(X, layer, Exact(), "layer")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2.0**-40, atol=0)


def test_fits_recover_known_rates():
    layers = np.arange(1, 11)
    fit = growth_fit(1e-6 * 1.5**layers)
    assert fit["growth_factor_per_layer"] == pytest.approx(1.5) and fit["r2"] == pytest.approx(1.0)
    x = np.logspace(-1, 1.5, 12)
    power = power_fit(x, 1e-4 + 3e-6 * x**2)
    assert power["p"] == pytest.approx(2.0, rel=1e-3) and power["a"] == pytest.approx(1e-4, rel=1e-3)


# Figure 1's tiny config is also the three-way test's, so its programs are compiled once per run
TINY = {
    1: Figure1(d=4, n=4, D=4, L=3, inits=8, precisions=(20, 24), bound_samples=8, first_order_samples=8, chunk=8),
    2: Figure2(d=4, n=4, D=4, depths=(1, 2), lambdas=(0.5, 1.0, 2.0), inits=5, precisions=(10, 16), chunk=8),
    3: Figure3(d=4, n=4, scales=(0.5, 1.0, 40.0), inits=6, precisions=(10, 16), chunk=8),
    4: Figure4(d=4, n=4, D=4, L=3, inits=6, precisions=(10, 16), bound_samples=0, chunk=8),
}


@pytest.mark.long
def test_reproduce_writes_figures_csv_summaries_and_an_index(tmp_path):
    from boundlab.experiments.coverage import Coverage

    tiny_coverage = Coverage(d=3, n=3, D=3, L=2, keys=16, networks=4)
    index = reproduce(str(tmp_path), progress=False, configs=TINY, bound_cases=(), coverage_config=tiny_coverage,
                      model=None)  # the real-model section: tests/test_models.py
    text = open(index).read()
    summaries = {}
    for number, config in TINY.items():
        folder = tmp_path / f"figure{number}"
        assert (folder / f"figure{number}.png").stat().st_size > 1000
        assert f"figure{number}/figure{number}.png" in text
        summaries[number] = json.loads((folder / "summary.json").read_text())
        assert summaries[number]["figure"] == number
        with open(folder / "errors_normwise.csv") as handle:
            rows = list(csv.reader(handle))
        grid = {2: len(getattr(config, "lambdas", ())), 3: len(getattr(config, "scales", ())), 4: 2}.get(number, 1)
        assert len(rows) == 1 + config.inits * grid * len(config.precisions)
    assert "Section 4 bounds" in text and (tmp_path / "bounds.json").exists()
    t24 = summaries[1]["precisions"]["t24"]["normwise"]
    assert {"growth_rate_log10_per_layer", "r2", "median_over_mean_last_layer"} <= set(t24)
    assert summaries[1]["theorem_4_30"]["t24"]["samples"] == 8
    assert "loglog_slope" in summaries[2]["precisions"]["t16"]["L2"]["normwise"]
    assert "growth_rate_log10_per_layer_norm_after" in summaries[4]["headline"]
    # index.md states the overflow of every figure and the Theorem 4.30 check at every precision
    assert text.count("* Overflow: no run overflowed.") + text.count("* Overflowed runs") == 4
    assert "Theorem 4.30 at t20" in text and "Theorem 4.30 at t24" in text

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    covered = json.loads((tmp_path / "coverage.json").read_text())
    assert covered["stochastic"]["runs"] == 16 and "probabilistic first-order bound" in text.lower()
    assert covered["stochastic"]["fraction_within_probabilistic"] >= 0.9
    for path in list(tmp_path.glob("figure*/summary.json")) + [tmp_path / "bounds.json", tmp_path / "coverage.json"]:
        json.loads(path.read_text(), parse_constant=refuse)
    # Figure 3's largest scale makes exp overflow: counted, never averaged in
    assert summaries[3]["precisions"]["t10"]["overflowed_runs"] == TINY[3].inits
    assert np.all(np.isfinite(summaries[3]["precisions"]["t10"]["normwise"]["mean"][:2]))


def test_figure_1_three_way_comparison_orders_measured_first_order_and_theorem():
    config = TINY[1]
    result = figure1(config, progress=False)
    for t in ("t20", "t24"):
        entry = result.summary["three_way"][t]
        assert entry["samples_checked"] > 0 and entry["ordering_holds"] is True and entry["verdict"].startswith("held")
        assert entry["measured_over_first_order"]["max"] <= 1 and entry["measured_within_first_order"] == 1.0
        assert entry["first_order_over_theorem"]["log10_max"] < 0  # the theorem is above the first-order bound
        from boundlab.experiments.reproduce import three_way_line

        assert "measured <= first-order <= theorem: held on the 8 networks" in three_way_line(t, entry)
    # an independent check of one sample: the first-order coefficient is that of boundlab.first_order itself
    from boundlab import first_order
    from boundlab.errors import ratio
    from boundlab.models.paper.plain import plain_forward

    params, X = config.narrow(init(jax.random.fold_in(jax.random.key(config.seed), 0), "figure1", d=4, n=4, D=4, L=3))
    record = first_order(plain_forward, Emulated("t24"))(params, X)
    coefficient = float(jnp.max(ratio(record.bound, jnp.abs(record.value)))) / 2.0**-24
    assert result.data["first_order_log10_coefficient"][0] == pytest.approx(np.log10(coefficient), rel=1e-9)


def test_quick_figure_1_grows_log_linearly_with_the_median_below_the_mean():
    config = dataclasses.replace(Figure1().quick(), bound_samples=0, precisions=(24,))
    summary = figure1(config, progress=False).summary
    headline = summary["headline"]
    assert headline["r2"] >= 0.9 and headline["median_over_mean_last_layer"] < 1
    assert headline["growth_rate_log10_per_layer"] > 0


def test_cli_figure_3_quick_reports_quadratic_growth(tmp_path, capsys):
    assert main(["figure", "3", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 1.5 <= summary["headline"]["p"] <= 2.5
    assert "figure 3: wrote" in capsys.readouterr().out
    assert main(["figure", "3", "--layers", "4"]) == 2
    assert "does not apply" in capsys.readouterr().err


@pytest.fixture(scope="module")
def overflowing_figure2():
    import dataclasses

    from boundlab.experiments import Figure2, figure2

    config = dataclasses.replace(Figure2(), d=6, n=6, D=6, depths=(3,), lambdas=(1.0, 10.0), inits=8, precisions=(16,))
    return figure2(config, progress=False)


def test_summary_json_is_strict_and_overflow_is_null(tmp_path, overflowing_figure2):
    import json

    from boundlab.experiments import write

    result = overflowing_figure2
    paths = write(result, tmp_path)

    def refuse(constant):
        raise ValueError(f"summary.json holds {constant}, which is not JSON")

    text = open(paths["summary"]).read()
    json.loads(text, parse_constant=refuse)
    assert "null" in text  # every run overflowed at lambda = 10: the means are undefined, written as null


def test_a_check_on_no_sample_is_not_reported_as_true():
    import dataclasses

    from boundlab.experiments import Figure1, figure1
    from boundlab.experiments.reproduce import _theorem_line

    # at t = 8 the hypotheses (n u < 1 and the alpha-conditions) fail on every sample
    config = dataclasses.replace(Figure1(), d=4, n=4, D=4, L=2, inits=4, bound_samples=4, first_order_samples=0,
                                 precisions=(4,))
    entry = figure1(config, progress=False).summary["theorem_4_30"]["t4"]
    assert entry["hypotheses_hold"] == 0 and entry["samples_checked"] == 0
    assert entry["bound_holds_on_samples"] is None  # not True: nothing was compared
    assert entry["verdict"] == "not checked (hypotheses failed (Theorem 4.30's hypotheses))"
    assert "none of the 4 sampled networks" in _theorem_line("t4", entry)


def test_figure_2_marks_overflowed_points_and_labels_its_axes(overflowing_figure2):
    from boundlab.experiments.plots import _figure2
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    figure = _figure2(plt, overflowing_figure2)
    try:
        assert type(figure.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"  # no overlapping text
        for axis in figure.axes:
            assert axis.get_xlabel() and axis.get_ylabel()
            notes = " ".join(text.get_text() for text in axis.texts)
            raw = overflowing_figure2.data["normwise"][:, 1, 0, 0]  # lambda = 10, t16, L = 3
            overflowed = int(np.sum(~np.isfinite(raw)))
            assert overflowed > 0 and f"lambda = 10: {overflowed}/8 overflowed" in notes
    finally:
        plt.close(figure)


def test_progress_off_a_terminal_is_plain_lines_with_counts_and_compiling(capsys):
    import jax.numpy as jnp

    from boundlab.experiments.sweeps import sweep

    sweep(lambda key, i: jnp.asarray(i, jnp.float64) * 2, jax.random.key(0), 20, chunk=5, description="demo")
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.strip() for line in err)  # no blank lines in a log
    assert err[0].startswith("demo: 0/20") and any("compiling" in line for line in err)
    assert err[-1].startswith("demo: 20/20")


def test_index_states_every_overflow(overflowing_figure2):
    from boundlab.experiments.reproduce import overflow_line

    line = overflow_line(2, overflowing_figure2)
    raw = overflowing_figure2.data["normwise"][:, 1, 0, 0]
    assert f"t16 lambda = 10, L = 3: {int(np.sum(~np.isfinite(raw)))}/8" in line


def _labels_overlap(figure):
    """Pairs of titles and axis labels (of any subplots, and the suptitle) whose drawn boxes overlap."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = [figure._suptitle] if figure._suptitle is not None else []
    for axis in figure.axes:
        texts += [axis.title, axis.xaxis.label, axis.yaxis.label]
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts if text.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


@pytest.mark.parametrize("number", [1, 3, 4])
def test_figures_have_labelled_axes_and_no_overlapping_titles(number):
    from boundlab.experiments import figure3, figure4
    from boundlab.experiments.plots import _figure1, _figure3, _figure4
    from boundlab.output.pyplot import pyplot

    # the reproduce test's configurations: the same programs, so the run's compilation cache
    # (tests/conftest.py) serves whichever of the two tests comes second
    run, draw = {1: (figure1, _figure1), 3: (figure3, _figure3), 4: (figure4, _figure4)}[number]
    config = TINY[number]
    plt = pyplot()
    figure = draw(plt, run(config, progress=False))
    try:
        assert type(figure.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
        for axis in figure.axes:
            assert axis.get_xlabel() and axis.get_ylabel() and axis.get_title()
        assert _labels_overlap(figure) == []
    finally:
        plt.close(figure)


def test_layer_errors_skip_only_identity_casts_for_format_numbers():
    # Figure 1's networks are rounded to the narrowest precision first, so casting them into each
    # float64-container format is an identity: skipping it gives the same errors bit for bit
    config = Figure1(d=4, n=4, D=4, L=2, inits=4, precisions=(8, 12), chunk=4, bound_samples=0, first_order_samples=0)
    keys = jax.random.split(jax.random.key(3), 4)

    def errors(format_numbers):
        return jax.jit(jax.vmap(lambda k: layer_errors(*config.narrow(init(k, "figure1", d=4, n=4, D=4, L=2)),
                                                       config.arithmetics(), config.norm,
                                                       format_numbers=format_numbers)))(keys)

    shared, cast = errors(True), errors(False)
    for kind in cast:
        assert np.array_equal(np.asarray(shared[kind]), np.asarray(cast[kind]), equal_nan=True)
        assert np.all(np.asarray(cast[kind])[np.isfinite(np.asarray(cast[kind]))] > 0)  # something was measured
