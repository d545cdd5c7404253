"""``analyze`` / ``measure``: every Section 4 statement against the error measured under
Emulated (recursive accumulation, the paper's Model 4.1), on >= 1000 random cases, and module
coefficients and per-layer factors against an independent implementation (paper_reference)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from paper_reference import module_coefficients
from paper_reference import theorem_4_30 as reference_theorem
from tolerances import relative_difference, relative_tolerance

import boundlab
from boundlab import Emulated, bounds
from boundlab.analysis import measure
from boundlab.analysis.measurement import RANGE_FLAG
from boundlab.cli import main
from boundlab.models.paper.interchange import save_case
from boundlab.models.paper import compare, init, rms_norm
from boundlab.bounds import Statement

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

# (d, n, D, L, norm, t, scheme): 6 groups x 176 cases = 1056 cases covering d, n, D in 2..16,
# L in 1..6, both norms, t in 10..24; each group is one compilation
# both norms, both schemes, t from 10 to 24 in the default run; two more groups with -m slow
GROUPS = [
    (2, 2, 2, 1, "layer", 10, "figure4"), (3, 5, 4, 2, "rms", 12, "figure1"), (8, 6, 3, 4, "rms", 20, "figure4"),
    (16, 16, 16, 2, "layer", 24, "figure1"),
    pytest.param((4, 16, 2, 6, "rms", 14, "figure4"), marks=pytest.mark.slow),
    pytest.param((12, 3, 10, 5, "layer", 18, "figure4"), marks=pytest.mark.slow),
]
BATCH = 176


def cases(group, seed=0):
    d, n, D, L, norm, t, scheme = group
    arithmetic = Emulated(f"t{t}", unroll=0)
    keys = jax.random.split(jax.random.key(seed + 1000 * t + L), BATCH)
    params, X = jax.vmap(lambda k: init(k, scheme, d=d, n=n, D=D, L=L))(keys)
    # format numbers, so that the given case and the emulated operands coincide
    params, X = jax.tree.map(lambda a: jnp.asarray(arithmetic.cast(a), jnp.float64), (params, X))
    return arithmetic, params, X


def valid_and_bound(entry, u):
    flags = entry["flags"]
    valid = np.ones(np.shape(entry["coefficient"]), dtype=bool)
    for value in flags.values():
        valid &= np.asarray(value, dtype=bool)
    measured = np.asarray(entry["measured"])
    rho_in = np.asarray(entry["input_error"])
    valid &= np.isfinite(measured) & np.isfinite(rho_in)
    gain = np.asarray(entry["input_gain"])
    with np.errstate(invalid="ignore"):  # inf * 0 where a coefficient is undefined (flagged invalid)
        bound = np.asarray(entry["coefficient"]) * u + np.where(gain == 0, 0.0, gain * rho_in)
    return valid, bound, measured


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: "d{}n{}D{}L{}-{}-t{}-{}".format(*g))
def test_every_statement_bounds_the_measured_error(group):
    arithmetic, params, X = cases(group)
    norm = group[4]
    u = arithmetic.unit_roundoff
    raw = jax.jit(jax.vmap(lambda p, x: measure(p, x, arithmetic, norm)))(params, X)
    checked = {}
    for name, entry in raw["statements"].items():
        if name == Statement.REMARK_4_18:
            continue
        valid, bound, measured = valid_and_bound(entry, u)
        assert np.all(measured[valid] <= bound[valid]), (name, np.max(measured[valid] / bound[valid]))
        # a broken hypothesis is flagged, never reported valid with an infinite coefficient
        assert not np.any(valid & ~np.isfinite(np.asarray(entry["coefficient"])))
        checked[name] = valid.mean()
    # the hypotheses hold on most cases at t >= 14 (at t = 10 with d >= 2 the alpha conditions may fail)
    if group[5] >= 14:
        assert min(checked.values()) >= 0.5, checked
    theorem = raw["theorem"]
    measured = np.asarray(raw["measured"])
    valid = np.asarray(theorem.valid) & np.asarray(raw["in_range"]).all(axis=1) & np.isfinite(measured)
    layerwise = np.asarray(theorem.terms["layerwise"]) * u
    assert np.all(measured[valid] <= layerwise[valid])
    assert np.all(layerwise <= np.asarray(theorem.value(u)) * (1 + relative_tolerance()))
    assert not np.any(valid & ~np.isfinite(np.asarray(theorem.coefficient)))
    if group[5] >= 14:
        assert valid.mean() >= 0.5


def test_coefficients_do_not_depend_on_u_and_bounds_scale_linearly():
    d, n, D, L = 4, 5, 6, 2
    coarse = Emulated("t10", unroll=0)
    params, X = init(jax.random.key(7), "figure4", d=d, n=n, D=D, L=L)
    params, X = jax.tree.map(lambda a: jnp.asarray(coarse.cast(a), jnp.float64), (params, X))  # representable in both
    raw = jax.jit(measure, static_argnums=(2, 3))(params, X, Emulated("t12", unroll=0), "rms")
    # the propagated block lemma carries the emulated network's own errors: into layer l the
    # error of layer l - 1's output (none into the first), out of the last the network's error
    propagated = raw["statements"][Statement.LEMMA_4_29_PROPAGATED]
    compared = jax.jit(compare, static_argnums=(2, 3))  # compiled, as measure's own run is
    network = compared(params, X, Emulated("t12", unroll=0), "rms").componentwise
    assert float(propagated["measured"][-1]) == float(raw["measured"])
    assert relative_difference(float(raw["measured"]), float(network)) < relative_tolerance()
    assert float(propagated["input_error"][0]) == 0.0
    assert float(propagated["input_error"][1]) == float(propagated["measured"][0]) > 0
    theorem = jax.jit(lambda p, x, u: bounds.theorem_4_30(p, x, norm="rms", u=u).coefficient)
    columns = jax.jit(lambda x, p, u: bounds.lemma_4_17_columns(rms_norm(x), p.Wq, p.Wk, u=u).coefficient)
    for u in (2.0**-12, 2.0**-20):  # a few statements evaluated directly at another u: same coefficients
        assert float(theorem(params, X, u)) == float(raw["theorem"].coefficient)
        first = jax.tree.map(lambda a: a[0], params)
        coefficient = columns(X, first, u)
        assert np.all(relative_difference(coefficient, raw["statements"][Statement.LEMMA_4_17]["coefficient"][0])
                      < relative_tolerance())
    record = raw["theorem"]
    assert float(record.value(2.0**-12)) == 2**8 * float(record.value(2.0**-20))
    fine = compared(params, X, Emulated("t20", unroll=0), "rms").componentwise  # the error shrinks with u, under the bound
    assert float(fine) < float(raw["measured"])
    assert float(fine) <= float(record.terms["layerwise"]) * 2.0**-20
    assert float(raw["measured"]) <= float(record.terms["layerwise"]) * 2.0**-12


@pytest.mark.parametrize("norm, scheme, fmt", [("layer", "figure4", "fp16"), ("rms", "figure1", "bf16")])
def test_module_coefficients_and_layer_factors_match_an_independent_implementation(norm, scheme, fmt):
    params, X = init(jax.random.key(11), scheme, d=5, n=4, D=6, L=3)  # not format numbers: a held-out style case
    data = boundlab.analyze(params, X, fmt, norm, conditions=False, first_order=False).to_dict()
    tolerance = relative_tolerance()
    numpy_params = {k: np.asarray(v) for k, v in params._asdict().items()}
    inputs = np.asarray(X)
    coefficient, per_layer = reference_theorem(numpy_params, inputs, norm)
    assert relative_difference(data[Statement.THEOREM_4_30]["coefficient"], coefficient) < tolerance
    for name in per_layer[0]:
        got = data[Statement.THEOREM_4_30]["per_layer"][name]
        want = [factors[name] for factors in per_layer]
        assert np.all(relative_difference(got, want) < tolerance), name
    for layer in range(3):
        p = {k: v[layer] for k, v in numpy_params.items()}
        for name, want in module_coefficients(inputs, p, norm).items():
            got = data[name]["per_layer"]["coefficient"][layer]
            assert relative_difference(got, want) < tolerance, (name, layer, got, want)
        from paper_reference import block
        inputs = block(inputs, p, norm)[-1]


def test_analysis_json_is_keyed_by_statement_names_and_the_theorem_holds():
    params, X = init(jax.random.key(3), "figure4", d=4, n=3, D=5, L=2)  # the README's shape: compiled once
    result = boundlab.analyze(params, X, "fp16", "layer")
    data = json.loads(result.to_json())
    theorem = data[Statement.THEOREM_4_30]
    for key in ("coefficient", "bound", "measured", "valid"):
        assert key in theorem
    assert theorem["valid"] and theorem["measured"] <= theorem["bound"]
    assert theorem["bound"] == pytest.approx(theorem["coefficient"] * 2.0**-11, rel=relative_tolerance())
    # the three-way comparison: measured <= autodiff first-order (+ O(u^2)) <= the statement
    u = 2.0**-11
    autodiff = theorem["first_order"]
    assert theorem["measured"] <= autodiff["bound"] + autodiff["bound"] ** 2
    assert autodiff["coefficient"] <= theorem["layerwise"]["coefficient"] <= theorem["coefficient"]
    rows = [(name, entry) for name, entry in data.items()
            if isinstance(entry, dict) and "first_order" in entry and name != Statement.THEOREM_4_30]
    assert len(rows) >= 10  # every part at an exact input has its autodiff row
    for name, entry in rows:
        if entry["valid"]:
            assert entry["first_order"]["below_statement"], name
            assert entry["measured"] <= entry["first_order"]["bound"] + (entry["coefficient"] * u) ** 2, name
    assert "autodiff" in result.table() and "autodiff first-order bound of the network" in result.table()
    for name in ("Lemma 4.3", "Lemma 4.10", "Lemma 4.11", "Corollary 4.12", "Remark 4.13", "Lemma 4.14",
                 "Corollary 4.16", "Lemma 4.17", "Lemma 4.19", "Corollary 4.20", "Lemma 4.21", "Remark 4.22",
                 "Corollary 4.23", "Lemma 4.26", "Lemma 4.28", "Lemma 4.29"):
        entry = data[name]
        assert {"coefficient", "measured", "valid", "bound", "holds"} <= set(entry), name
        assert entry["holds"], name
    rows = data["condition numbers"]
    assert {row["layer"] for row in rows} == {1, 2}
    for row in rows:  # closed forms are equal to, or bound, the autodiff condition numbers
        tol = 1 + relative_tolerance()
        assert row["closed_form"] * tol >= row["autodiff"], row
        if row["relation"] == "=":
            assert relative_difference(row["closed_form"], row["autodiff"]) < relative_tolerance(), row
    table = result.table()
    assert "Theorem 4.30" in table and "Lemma 4.29" in table
    for name, entry in data.items():  # a failed hypothesis is named on its statement's line
        if isinstance(entry, dict) and "coefficient" in entry and name != Statement.REMARK_4_18 and not entry["valid"]:
            line = next(row for row in table.splitlines() if row.startswith(name + " "))
            failed = [flag for flag, holds in entry["flags"].items() if not holds]
            assert failed and all(flag in line for flag in failed), line


def test_broken_hypotheses_are_flagged_or_refused():
    params, X = init(jax.random.key(5), "figure4", d=3, n=4, D=4, L=2)
    singular = params._replace(Wk=params.Wk.at[0, 0].set(0.0).at[0, 1].set(0.0).at[0, 2].set(0.0))
    data = boundlab.analyze(singular, X, "t20", "rms", conditions=False, first_order=False).to_dict()
    theorem = data[Statement.THEOREM_4_30]
    assert not theorem["flags"]["W_k^T W_q non-singular"] and not theorem["valid"]
    assert not data[Statement.REMARK_4_22]["valid"]
    silent = params._replace(Wv=params.Wv.at[0, 1].set(0.0).at[0, 0].set(0.0).at[0, 2].set(0.0))
    data = boundlab.analyze(silent, X, "t20", "rms", conditions=False, first_order=False).to_dict()
    assert data[Statement.LEMMA_4_21]["coefficient"] == np.inf and not data[Statement.LEMMA_4_21]["valid"]
    assert not data[Statement.THEOREM_4_30]["valid"]
    with pytest.raises(ValueError, match="n u"):
        boundlab.analyze(params, X, "t2", "rms", first_order=False)
    with pytest.raises(ValueError, match="constant"):
        boundlab.analyze(params, X.at[:, 1].set(2.0), "t20", "layer")
    with pytest.raises(ValueError, match="NaN"):
        boundlab.analyze(params, X.at[0, 0].set(np.nan), "t20", "layer")
    with pytest.raises(ValueError, match="about Model 4.1.*not the matrix unit hopper-wgmma-fp8_e4m3-fp32"):
        boundlab.analyze(params, X, "fp8_e4m3", "layer", accumulation="hopper-wgmma-fp8_e4m3-fp32")


def test_overflow_is_flagged_not_averaged_in():
    params, X = init(jax.random.key(3), "figure1", d=3, n=3, D=4, L=2, input_scale=30.0)
    data = boundlab.analyze(params, X, "fp16", "layer", conditions=False, first_order=False).to_dict()
    theorem = data[Statement.THEOREM_4_30]
    assert not np.isfinite(theorem["measured"])
    assert not theorem["flags"]["no overflow"] and not theorem["valid"]
    # a comparison with an overflowed measurement is no verdict (it read "holds": true before)
    assert theorem["holds"] is None and theorem["verdict"] == "not checked (overflow or NaN)"
    # the last layer overflowed: its entries are not checked, for that reason; the first layer's are
    propagated = data[Statement.LEMMA_4_29_PROPAGATED]
    assert propagated["check"]["not_checked"]["overflow or NaN"] == 1 and propagated["check"]["checked"] == 1
    assert propagated["verdict"] == "held (1 of 2 checked; not checked: overflow or NaN on 1)"
    for name, entry in data.items():
        if isinstance(entry, dict) and entry.get("holds") is True:  # held: at least one entry was compared
            assert entry["check"]["checked"] >= 1 and entry["check"]["failed"] == 0, name
    table = boundlab.analyze(params, X, "fp16", "layer", conditions=False, first_order=False).table()
    assert "n/c (overflow or NaN)" in next(row for row in table.splitlines() if row.startswith("Theorem 4.30"))
    assert "yes 1/2" in next(row for row in table.splitlines() if row.startswith("Lemma 4.29 (propagated)"))
    # a column that rounding to fp16 makes constant: layer norm's 0/0 in the emulated run, no verdict
    X = np.array(init(jax.random.key(3), "figure1", d=3, n=3, D=4, L=2)[1])
    X[:, 1] = [1.0, 1.0 + 2.0**-14, 1.0 - 2.0**-14]  # not constant in float64, constant in fp16
    data = boundlab.analyze(params, X, "fp16", "layer", conditions=False, first_order=False).to_dict()
    assert np.isnan(data[Statement.THEOREM_4_30]["measured"]) and data[Statement.THEOREM_4_30]["holds"] is None
    assert data[Statement.LEMMA_4_29_PROPAGATED]["verdict"] == "not checked (overflow or NaN)"


def test_analyze_needs_float64(x64_off):
    params, X = init(jax.random.key(0), "figure4", d=3, n=3, D=3, L=1, dtype=jnp.float32)
    with pytest.raises(RuntimeError, match="x64"):
        boundlab.analyze(params, X, "fp16", first_order=False)


def test_cli_analyze_prints_json_and_refuses_bad_files(tmp_path, capsys):
    params, X = init(jax.random.key(2), "figure4", d=3, n=3, D=4, L=2)
    path = tmp_path / "case.npz"
    save_case(path, params, X)
    assert main(["analyze", str(path), "--format", "fp16", "--norm", "layer", "--json", "--no-conditions", "--no-first-order"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["case"]["format"] == "fp16" and data[Statement.THEOREM_4_30]["measured"] > 0
    assert RANGE_FLAG in data[Statement.LEMMA_4_14]["flags"]
    good = dict(np.load(path))
    bad = {
        "missing": ({k: v for k, v in good.items() if k != "Wv"}, "missing array 'Wv'"),
        "shape": ({**good, "b1": good["b1"][:, :2]}, "array 'b1' has shape"),
        "nan": ({**good, "X": np.where(np.eye(3, dtype=bool), np.nan, good["X"])}, "array 'X' contains nan"),
        "float32": ({**good, "A1": good["A1"].astype(np.float32)}, "array 'A1' has dtype float32"),
        "ndim": ({**good, "X": good["X"][None]}, "array 'X' has 3 dimensions"),
    }
    for label, (arrays, message) in bad.items():
        np.savez(tmp_path / f"{label}.npz", **arrays)
        assert main(["analyze", str(tmp_path / f"{label}.npz")]) == 2, label
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (label, err)
    (tmp_path / "junk.npz").write_text("not a zip")
    assert main(["analyze", str(tmp_path / "junk.npz")]) == 2
    assert "not an .npz archive" in capsys.readouterr().err


def test_analyze_runs_the_exact_forward_of_the_case_once(monkeypatch):
    from boundlab.analysis import measurement as measure_module
    from boundlab.models.paper import network

    calls = []
    original = network.forward

    def counting(params, X, arithmetic=None, *args, **kwargs):
        calls.append(type(arithmetic).__name__)
        return original(params, X, arithmetic, *args, **kwargs)

    monkeypatch.setattr(measure_module, "forward", counting)
    monkeypatch.setattr(network, "forward", counting)  # what theorem_4_30 would call
    params, X = init(jax.random.key(5), "figure4", d=3, n=3, D=4, L=2)
    data = boundlab.analyze(params, X, "t20", "layer", conditions=False, first_order=False).to_dict()
    # one exact pass of the case as given, one of the case rounded to the format (the
    # reference of the measured network error), one emulated pass; the theorem reuses the factors
    assert calls == ["Exact", "Exact", "Emulated"]
    assert np.isfinite(data[Statement.THEOREM_4_30]["coefficient"])


def test_the_api_refuses_an_empty_case_with_the_clis_message():
    # analyze from Python raised IndexError (L = 0) and "cannot sum an empty axis" (n = 0)
    params, X = init(jax.random.key(0), "figure4", d=3, n=2, D=4, L=1)
    with pytest.raises(ValueError, match=r"^the case is empty: L = 0 layers \(A1 has shape \(0, 4, 3\)\)$"):
        boundlab.analyze(jax.tree.map(lambda a: a[:0], params), X, "fp16")
    with pytest.raises(ValueError, match=r"^the case is empty: n = 0 tokens \(X has shape \(3, 0\)\)$"):
        boundlab.analyze(params, np.zeros((3, 0)), "fp16")
    with pytest.raises(ValueError, match="D = 0 hidden units"):
        bounds.theorem_4_30(params._replace(A1=params.A1[:, :0], b1=params.b1[:, :0], A2=params.A2[:, :, :0]), X,
                            norm="layer", u=2.0**-11)
