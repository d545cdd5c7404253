"""boundlab.emulate: any JAX function under Model 4.1, checked against the hand-written
transformer, the scalar MPFR interpreter and the arithmetic's own operations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from interpreter import Scalar
from interpreter import forward as interpret

from boundlab import Emulated, Exact, get_format
from boundlab.emulation import UnsupportedPrimitive, emulate
from boundlab.models.paper import forward, init
from boundlab.models.paper.plain import plain_forward


@pytest.fixture(scope="module")
def network():
    return init(jax.random.key(3), "figure1", d=5, n=4, D=6, L=2)


@pytest.mark.parametrize("arithmetic, norm", [
    (Emulated("t12", mode="up", unroll=0), "rms"), (Emulated("t16", accumulation="pairwise", unroll=0), "layer"),
    (Emulated("bf16", accumulation="blocked", block_size=2, unroll=0), "rms"),
    (Emulated("fp16", accumulator="fp32", unroll=0), "layer"), (Exact("recursive"), "layer"),
], ids=str)
def test_plain_jnp_transformer_is_bit_identical_to_forward(network, arithmetic, norm):
    params, X = network
    got = emulate(lambda p, x: plain_forward(p, x, norm), arithmetic)(params, X)
    want = forward(params, X, arithmetic, norm)
    assert got.dtype == want.dtype and np.array_equal(np.asarray(got), np.asarray(want), equal_nan=True)


@pytest.mark.parametrize("name, mode, accumulation", [("t8", "nearest", "recursive"), ("t10", "down", "pairwise"),
                                                      ("t6", "zero", "recursive")])
def test_plain_transformer_matches_the_scalar_mpfr_interpreter(name, mode, accumulation):
    params, X = init(jax.random.key(5), "figure1", d=3, n=3, D=4, L=2)
    got = emulate(plain_forward, Emulated(name, mode=mode, accumulation=accumulation))(params, X)
    lists = {k: np.asarray(getattr(params, k)).tolist() for k in params._fields}
    want = interpret(Scalar(get_format(name), mode, accumulation), lists, np.asarray(X).tolist(), "layer")
    assert np.array_equal(np.asarray(got), np.array(want))


def test_53_bits_is_float64_with_the_same_order():
    x = jax.random.normal(jax.random.key(0), (7, 9))

    def f(x):
        return jnp.tanh(x) * jnp.exp(-x) / (1 + x * x) - jnp.sqrt(jnp.abs(x))  # no sums: XLA's order is moot

    assert np.array_equal(emulate(f, Emulated("t53"))(x), f(x))
    g = lambda a: a @ a.T + jnp.sum(a, axis=1)  # noqa: E731
    assert np.array_equal(emulate(g, Emulated("t53"))(x), emulate(g, Exact("recursive"))(x))


def test_every_elementwise_result_and_literal_is_rounded_once():
    fp16 = Emulated("fp16")
    x = jnp.asarray(np.random.default_rng(0).standard_normal(64), jnp.float32)
    got = emulate(lambda v: (v + 0.1) * v / 3.0 - jnp.exp(v), fp16)(x)
    v = fp16.cast(x)
    want = fp16.sub(fp16.div(fp16.mul(fp16.add(v, fp16.cast(0.1)), v), fp16.cast(3.0)), fp16.exp(v))
    assert np.array_equal(got, want)
    # a transcendental function other than exp: its float64 value rounded once
    got = emulate(jnp.tanh, Emulated("t10"))(x.astype(jnp.float64))
    want = Emulated("t10").round(jnp.tanh(Emulated("t10").cast(x.astype(jnp.float64))))
    assert np.array_equal(got, want)


def test_control_flow_calls_and_custom_rules_are_emulated_inside():
    t8 = Emulated("t8")
    x = jnp.linspace(0.3, 1.7, 6)

    @jax.custom_vjp
    def triple(a):
        return a * 3.0

    triple.defvjp(lambda a: (triple(a), None), lambda _, g: (3 * g,))

    def f(v):
        v = jax.nn.relu(v - 0.5) + 0.1  # custom_jvp
        v = jax.jit(lambda a: a * 1.1)(v)
        v, ys = jax.lax.scan(lambda c, y: (c * 1.3 + y, c.sum()), v, jnp.stack([v, v]))
        v = jax.lax.while_loop(lambda c: c[0] < 40, lambda c: c * 1.7, v)
        v = jax.lax.cond(ys[0] > 0, lambda a: a + 0.7, lambda a: a - 0.7, v)
        return triple(jax.checkpoint(lambda a: a / 0.9)(v)), ys

    got, ys = emulate(f, t8)(x)

    def by_hand(v):
        c = t8.cast
        v = t8.add(jnp.maximum(t8.sub(c(v), c(0.5)), 0), c(0.1))
        v = t8.mul(v, c(1.1))
        stack = jnp.stack([v, v])
        sums = []
        for y in stack:
            sums.append(t8.sum(v))
            v = t8.add(t8.mul(v, c(1.3)), y)
        while v[0] < 40:
            v = t8.mul(v, c(1.7))
        v = t8.add(v, c(0.7)) if sums[0] > 0 else t8.sub(v, c(0.7))
        return t8.mul(t8.div(v, c(0.9)), c(3.0)), jnp.stack(sums)

    want, want_ys = by_hand(x)
    assert np.array_equal(got, want) and np.array_equal(ys, want_ys)


def test_jit_vmap_and_one_trace_per_shape():
    bf16 = Emulated("bf16")
    counted = chex.assert_max_traces(lambda a, b: jnp.tanh(a @ b), n=1)
    emulated = emulate(counted, bf16)
    A = jax.random.normal(jax.random.key(1), (3, 4, 5), jnp.float32)
    B = jax.random.normal(jax.random.key(2), (5, 2), jnp.float32)
    batched = jax.jit(jax.vmap(emulated, in_axes=(0, None)))(A, B)
    for i in range(3):
        assert np.array_equal(batched[i], emulate(lambda a, b: jnp.tanh(a @ b), bf16)(A[i], B))
    emulated(A[0], B)
    emulated(A[1], B)  # same shapes: no new trace (assert_max_traces would raise)
    emulate(counted, bf16)(A[2], B)  # a new wrapper of the same function and policy: no new trace


def test_wrapping_again_in_a_loop_does_not_retrace():
    # emulate / first_order called afresh every step (a training loop, a notebook cell run twice)
    # reuse the program of the same function (or module structure) and policy
    from flax import nnx

    from boundlab import first_order

    t12 = Emulated("t12")
    linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0), param_dtype=jnp.float32)
    traces = []

    def f(m, x):
        traces.append(1)  # runs once per trace
        return jnp.tanh(m(x))

    x = jnp.ones((2, 4), jnp.float32)
    for step in range(3):
        linear.kernel[...] = linear.kernel[...] * 1.5  # new values, same structure
        y = emulate(f, t12)(linear, x)
        record = first_order(f, t12)(linear, x)
        assert np.array_equal(y, emulate(f, t12)(linear, x))
        assert np.all(np.abs(y - record.value) <= record.bound + 2 * 2.0**-12 * np.abs(record.value))
    assert len(traces) == 3  # emulate's trace, first_order's site discovery and its VJP trace, once each
    assert np.array_equal(emulate(linear, t12)(x), emulate(linear, t12)(x))


def test_flax_nnx_modules_as_function_and_as_argument(network):
    from flax import nnx

    from boundlab.models import Transformer, from_params

    params, X = network
    model = from_params(params, norm="layer")
    assert isinstance(model, Transformer)
    bf16 = Emulated("bf16", unroll=0)
    want = forward(params, X, bf16)
    assert np.array_equal(emulate(model, bf16)(X), want)  # the module's Exact() forward, emulated
    assert np.array_equal(emulate(lambda m, x: m(x), bf16)(model, X), want)
    linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0), param_dtype=jnp.float32)
    x = jnp.ones((2, 4), jnp.float32)
    want = bf16.add(bf16.dot_general(x, linear.kernel[...], (((1,), (0,)), ((), ()))), bf16.cast(linear.bias[...]))
    assert np.array_equal(emulate(linear, bf16)(x), want)


def test_stochastic_rounding_needs_a_key_and_is_reproducible():
    sr = Emulated("t8", mode="stochastic")
    f = emulate(lambda a: jnp.sum(a * 1.01), sr)
    x = jnp.linspace(0.1, 1.0, 50)
    with pytest.raises(ValueError, match="key"):
        f(x)
    first, again, other = f(x, key=jax.random.key(0)), f(x, key=jax.random.key(0)), f(x, key=jax.random.key(1))
    assert first == again and first != other


def test_an_unsupported_primitive_is_named():
    with pytest.raises(UnsupportedPrimitive, match="primitive 'lu'"):
        emulate(jnp.linalg.det, Emulated("t10"))(jnp.eye(5) + 0.5)


def test_scatter_add_rounds_each_update_in_index_order_as_float16_does():
    # the backward pass of a gather (embedding lookups, take_along_axis); reference: numpy's
    # float16 additions (correctly rounded: float32 then float16 is innocuous), one per update
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3)).astype(np.float16)
    index = np.array([0, 2, 0, 4, 2, 2, 7])  # collisions, and one update out of range (dropped)
    v = rng.standard_normal((7, 3)).astype(np.float16)

    def f(x, v):
        return x.at[index].add(v, mode="drop")

    want = x.copy()
    for i, j in enumerate(index):
        if j < len(x):
            want[j] = want[j] + v[i]
    got = emulate(f, Emulated("fp16"))(x.astype(np.float64), v.astype(np.float64))
    assert np.array_equal(np.asarray(got, np.float64), want.astype(np.float64))
    assert np.array_equal(np.asarray(emulate(f, Exact())(x.astype(np.float64), v.astype(np.float64))),
                          np.asarray(jax.jit(f)(x.astype(np.float64), v.astype(np.float64))))
    # a gradient through take_along_axis: emulated under jit and vmap, bounded by first_order
    w, t = rng.standard_normal((4, 6)), np.array([[1, 1, 3], [0, 5, 5], [2, 2, 2], [4, 0, 1]])

    def g(w):
        return jax.grad(lambda w: jnp.sum(jnp.take_along_axis(w, t, axis=1) ** 2))(w)

    bf16 = Emulated("bf16")
    emulated = jax.jit(emulate(g, bf16))(w)
    assert np.array_equal(np.asarray(jax.vmap(emulate(g, bf16))(np.stack([w, w]))[1]), np.asarray(emulated))
    from boundlab import first_order

    record = first_order(g, bf16)(w)
    assert np.all(np.abs(np.asarray(emulated, np.float64) - np.asarray(record.value)) <= np.asarray(record.bound))


def test_scan_operands_by_counts_and_by_jax_0_11s_flat_tree():
    # jax 0.11 dropped scan's num_consts/num_carry for ft_in, a flat tree of (consts, init, xs)
    # (a lent H200 ran jax 0.11.2 and emulate failed on every scan); a stand-in with its two methods
    from boundlab.emulation.interpreter import _scan_operands

    class FlatTree:
        def __init__(self, counts, values=()):
            self.counts, self.values = counts, list(values)

        def update(self, values):
            assert len(values) == sum(self.counts)
            return FlatTree(self.counts, values)

        def unpack(self):
            ends = np.cumsum(self.counts)
            return tuple(self.values[end - count:end] for count, end in zip(self.counts, ends, strict=True))

    invals = list(range(6))
    by_counts = _scan_operands({"num_consts": 1, "num_carry": 2}, invals)
    assert by_counts == _scan_operands({"ft_in": FlatTree((1, 2, 3))}, invals) == ([0], [1, 2], [3, 4, 5])
    with pytest.raises(NotImplementedError, match="jax < 0.11"):
        _scan_operands({"jaxpr": None, "length": 3}, invals)
