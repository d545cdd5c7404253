"""Property-based bad-input tests: random NaN / inf / zero / constant columns, huge and tiny
magnitudes, wrong shapes and dtypes, invalid u and random format strings, against the public
entry points, outside and inside jit / vmap.  Each outcome must be one of: a one-line error of a
known type; finite values whose flags are consistent with them; non-finite values with a flag
saying why.  Never a silent finite number from an invalid input.

A fixed number of examples per entry point (hypothesis's ``ci`` profile is derandomized) and one
shape per entry point, so that each compiles once."""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import boundlab
from boundlab import Emulated, bounds, emulate, first_order
from boundlab.formats import get_format
from boundlab.models.paper.interchange import load_case
from boundlab.analysis.monitoring import diagnose
from boundlab.models.paper import init
from boundlab.models.paper.network import PARAM_NAMES
from boundlab.bounds import Statement

pytestmark = pytest.mark.fast_compile  # flags, errors and inequalities: tests/conftest.py

SHAPE = dict(d=3, n=3, D=4, L=2)  # the shape of tests/test_linalg.py and test_analysis's overflow case
BASE = init(jax.random.key(0), "figure4", **SHAPE)
KNOWN_ERRORS = (ValueError, TypeError, RuntimeError)
TARGETS = ("X",) + PARAM_NAMES
KINDS = ("none", "nan", "inf", "-inf", "zero column", "constant column", "scale")


@st.composite
def perturbations(draw):
    """(kind, target array, entry, log2 of a scale): one hostile change of the base case."""
    return (draw(st.sampled_from(KINDS)), draw(st.sampled_from(TARGETS)), draw(st.integers(0, 47)),
            draw(st.sampled_from([-1070, -600, -60, 0, 60, 600, 1000])))


def perturb(perturbation, base=BASE):
    """The base case with the perturbation applied (NumPy float64 arrays)."""
    kind, target, entry, exponent = perturbation
    params = {name: np.array(getattr(base[0], name)) for name in PARAM_NAMES}
    X = np.array(base[1])
    array = X if target == "X" else params[target]
    flat = array.reshape(-1)
    i = entry % flat.size
    if kind in ("nan", "inf", "-inf"):
        flat[i] = float(kind)
    elif kind == "scale":
        array *= 2.0**exponent if abs(exponent) < 1000 else np.inf if exponent > 0 else 0.0
        np.copyto(array, np.where(np.isinf(array), np.finfo(np.float64).max, array))  # huge, still finite
    elif kind in ("zero column", "constant column"):
        column = i % X.shape[1]
        X[:, column] = 0.0 if kind == "zero column" else 2.0
    return boundlab.models.paper.Params(**params), X


def finite_input(params, X):
    return all(np.all(np.isfinite(a)) for a in (X, *params))


def one_line(error):
    message = str(error)
    assert message and "\n" not in message.strip(), f"{type(error).__name__}: {message!r}"


def check_record(record, *, must_be_invalid):
    """A Section 4 record: never negative, finite when valid, invalid when it must be."""
    coefficient = np.asarray(record.coefficient, dtype=float)
    valid = np.asarray(record.valid)
    assert not np.any(coefficient < 0), coefficient
    assert np.all(np.isfinite(coefficient) | ~valid), "valid with a non-finite coefficient"
    if must_be_invalid is not None:
        assert not np.any(valid & must_be_invalid), "an invalid input gave a record whose flags all hold"


U_VALUES = st.sampled_from([2.0**-11, 2.0**-24, 2.0**-53, 0.0, -(2.0**-11), 1.0, 0.5, float("nan")])


@settings(max_examples=40)
@given(perturbations(), U_VALUES, st.sampled_from(["layer", "rms"]))
def test_theorem_4_30_outside_jit_raises_one_line_or_returns_a_consistent_record(perturbation, u, norm):
    params, X = perturb(perturbation)
    try:
        record = bounds.theorem_4_30(params, X, norm=norm, u=u)
    except KNOWN_ERRORS as error:
        one_line(error)
        return
    assert finite_input(params, X), "NaN or inf in the input, and no error"
    assert 0 < u < 1, "an invalid u, and no error"
    check_record(record, must_be_invalid=None)


@settings(max_examples=15)
@given(st.lists(perturbations(), min_size=4, max_size=4), st.lists(U_VALUES, min_size=4, max_size=4),
       st.sampled_from(["layer", "rms"]))
def test_theorem_4_30_under_jit_and_vmap_flags_every_invalid_input(batch, us, norm):
    cases = [perturb(p) for p in batch]
    params = jax.tree.map(lambda *a: np.stack(a), *[c[0] for c in cases])
    X = np.stack([c[1] for c in cases])
    u = np.asarray(us)
    records = jax.jit(jax.vmap(lambda p, x, u: bounds.theorem_4_30(p, x, norm=norm, u=u)))(params, X, u)
    invalid = np.asarray([not finite_input(*c) for c in cases]) | ~((u > 0) & (u < 1))
    layer_norm_undefined = np.asarray([np.any(np.all(c[1] == c[1][:1], axis=0)) if norm == "layer"
                                       else np.any(np.all(c[1] == 0, axis=0)) for c in cases])
    check_record(records, must_be_invalid=invalid | layer_norm_undefined)
    bad_u = ~((u > 0) & (u < 1))
    assert np.all(np.isnan(np.asarray(records.coefficient))[bad_u])  # NaN, never a number, at a bad u


@settings(max_examples=12)
@given(perturbations(), st.sampled_from(["fp16", "fp99", "t1", ""]))  # one valid format: one compilation
def test_analyze_raises_one_line_or_gives_verdicts_that_never_say_held_against_nan(perturbation, fmt):
    params, X = perturb(perturbation)
    try:
        analysis = boundlab.analyze(params, X, fmt, "layer", conditions=False, first_order=False)
    except KNOWN_ERRORS as error:
        one_line(error)
        return
    assert finite_input(params, X), "NaN or inf in the input, and no error"
    data = analysis.to_dict()
    analysis.to_json()  # strict JSON, whatever overflowed
    for name, entry in data.items():
        if not isinstance(entry, dict) or "verdict" not in entry:
            continue
        check = entry["check"]
        assert check["checked"] + sum(check["not_checked"].values()) == check["entries"], name
        assert entry["holds"] is {"held": True, "failed": False, "not checked": None}[entry["verdict"].split(" (")[0]]
        if entry["holds"] is None:
            assert entry["verdict"].startswith("not checked (") and check["checked"] == 0, name
        if entry["holds"] is True:
            assert check["checked"] >= 1 and check["failed"] == 0, name
        if name == Statement.THEOREM_4_30 and not np.isfinite(entry["measured"]):
            assert entry["holds"] is None, "a verdict against a non-finite measurement"
        assert not (entry["valid"] and not np.isfinite(entry["coefficient"])), name


@settings(max_examples=50)
@given(st.text(max_size=12))
def test_format_strings_are_a_format_or_a_one_line_error(text):
    try:
        fmt = get_format(text)
    except KNOWN_ERRORS as error:
        one_line(error)
        return
    assert 2 <= fmt.precision <= 53 and 0 < fmt.unit_roundoff < 1


ARRAY_KINDS = st.sampled_from(["good", "float32", "int64", "complex128", "bool", "nan", "inf", "missing", "extra dim",
                               "wrong shape", "empty"])


@settings(max_examples=40)
@given(st.sampled_from(TARGETS), ARRAY_KINDS, st.integers(0, 47))
def test_the_interchange_loader_gives_a_valid_case_or_one_line(target, kind, entry):
    arrays = {name: np.array(getattr(BASE[0], name)) for name in PARAM_NAMES} | {"X": np.array(BASE[1])}
    array = arrays[target]
    if kind == "float32":
        arrays[target] = array.astype(np.float32)
    elif kind in ("int64", "complex128", "bool"):
        arrays[target] = array.astype(kind)
    elif kind in ("nan", "inf"):
        array.reshape(-1)[entry % array.size] = float(kind)
    elif kind == "missing":
        del arrays[target]
    elif kind == "extra dim":
        arrays[target] = array[None]
    elif kind == "wrong shape":
        arrays[target] = array[..., :-1] if array.shape[-1] > 1 else np.concatenate([array, array], axis=-1)
    elif kind == "empty":
        arrays[target] = array[:0]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "case.npz")
        np.savez(path, **arrays)
        try:
            params, X = load_case(path)
        except KNOWN_ERRORS as error:
            one_line(error)
            return
    # dropping a token of X is another valid case (n is free); every other change must be refused
    assert kind == "good" or (kind == "wrong shape" and target == "X"), f"{kind} {target} loaded"
    assert X.dtype == np.float64 and finite_input(params, X)


def small_function(x):
    return jnp.tanh(x) @ x.T + jnp.sum(x * x)


@settings(max_examples=20)
@given(st.sampled_from(["none", "nan", "inf", "huge", "tiny", "zero"]), st.integers(0, 5),
       st.sampled_from(["bf16", "fp16", "fp8_e4m3"]))
def test_emulate_and_first_order_never_give_a_finite_number_for_a_non_finite_input(kind, entry, fmt):
    x = np.array(jax.random.normal(jax.random.key(1), (2, 3)))
    flat = x.reshape(-1)
    if kind in ("nan", "inf"):
        flat[entry] = float(kind)
    elif kind == "huge":
        flat[entry] = 1e300
    elif kind == "tiny":
        x *= 1e-300
    elif kind == "zero":
        x[:] = 0.0
    arithmetic = Emulated(fmt)
    value = np.asarray(emulate(small_function, arithmetic)(x), dtype=float)
    record = first_order(small_function, arithmetic)(x)
    finite = bool(record.flags["finite"])
    assert finite == bool(np.all(np.isfinite(np.asarray(record.value))) and np.all(np.isfinite(np.asarray(record.bound))))
    if not np.all(np.isfinite(x)):
        assert not np.all(np.isfinite(value)) and not finite  # NaN / inf in: no silent finite number out
    if finite:
        assert np.all(np.asarray(record.bound) >= 0)


@settings(max_examples=10)
@given(st.lists(perturbations(), min_size=2, max_size=2))
def test_diagnostics_under_jit_poison_every_value_when_an_input_is_not_finite(batch):
    cases = [perturb(p) for p in batch]
    for params, X in cases:
        result = diagnose(params, X[None], norm="layer", formats=("bf16",))
        finite = finite_input(params, X)
        assert bool(result.flags["finite"]) == finite
        values = [np.asarray(v) for v in list(result.network.values()) + list(result.layers.values())]
        if not finite:
            assert all(np.all(np.isnan(v)) for v in values)  # NaN with the flag, never a number
        elif bool(result.flags["theorem hypotheses"]):
            assert np.isfinite(float(result.network["log10_theorem_4_30"]))
