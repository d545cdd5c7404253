"""boundlab.kernels: the Pallas rounding and rounded-matmul kernels against their references (the
XLA code paths), bit for bit in the exact modes.

One suite, two classes, as jax's own Pallas op tests: ``TestKernels`` compiles the kernels
(GPU/TPU only; skipped on the CPU) and ``TestKernelsInterpret`` runs the same tests in Pallas's
interpret mode (CPU).  Interpret mode is slow: small shapes, a few hypothesis examples.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import adversarial

from boundlab import Emulated, gamma, get_format
from boundlab.rounding import round_bits

NO_SUBNORMALS = get_format("fp16").replace(subnormals=False, name="fp16-nosub")
ROUND_CASES = [("fp16", "nearest"), ("bf16", "zero"), ("fp8_e4m3", "up"), ("fp8_e5m2", "down"), ("t20", "up"),
               (NO_SUBNORMALS, "down")]
# unroll=0: the reference as a loop (the same bits as unrolled, much faster to compile)
MATMUL_CASES = [Emulated("fp16", unroll=0), Emulated("bf16", accumulation="blocked", block_size=4, unroll=0),
                Emulated("fp8_e4m3", mode="zero", unroll=0), Emulated("fp8_e5m2", mode="up", unroll=0),
                Emulated("t12", mode="down", unroll=0), Emulated(NO_SUBNORMALS, unroll=0),
                Emulated("fp16", accumulator="fp32", unroll=0)]


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.all((a == b) & (np.signbit(a) == np.signbit(b))
                                                                      | (np.isnan(a) & np.isnan(b))))


class _KernelSuite:
    INTERPRET = False

    def setup_method(self):
        if not self.INTERPRET and jax.default_backend() == "cpu":
            pytest.skip("compiled Pallas kernels need a GPU or TPU; the interpret-mode twin runs on the CPU")

    # -- round ------------------------------------------------------------------------------
    @pytest.mark.parametrize("name, mode", ROUND_CASES, ids=str)
    def test_round_is_bit_identical_to_the_reference(self, name, mode):
        from boundlab.kernels import round as kernel_round

        fmt = get_format(name)
        dtype = np.float32 if fmt.fits_float32 else np.float64
        values = jnp.asarray(adversarial(fmt, dtype, 600, seed=1), dtype)
        got = kernel_round(values, fmt, mode, interpret=self.INTERPRET)
        assert _same(got, round_bits(values, fmt, mode))

    def test_stochastic_round_uses_the_bits_it_is_given(self):
        from boundlab.kernels import round as kernel_round
        from boundlab.rounding import random_bits_for

        x = jax.random.normal(jax.random.key(0), (50, 3), jnp.float32)
        bits = random_bits_for(jax.random.key(1), x.shape, x.dtype)
        fmt = get_format("bf16")
        assert _same(kernel_round(x, fmt, "stochastic", bits, interpret=self.INTERPRET),
                     round_bits(x, fmt, "stochastic", bits))
        with pytest.raises(ValueError, match="random_bits"):
            kernel_round(x, fmt, "stochastic", interpret=self.INTERPRET)

    @settings(max_examples=2, deadline=None)
    @given(st.integers(1, 300))
    def test_round_any_length_vmap_and_straight_through_gradient(self, size):
        from boundlab.kernels import round as kernel_round

        x = jnp.linspace(-3.0, 3.0, size, dtype=jnp.float32) * 1.37
        fmt = get_format("fp16")
        assert _same(kernel_round(x, fmt, interpret=self.INTERPRET), round_bits(x, fmt, "nearest"))
        batched = jax.vmap(lambda v: kernel_round(v, fmt, interpret=self.INTERPRET))(jnp.stack([x, -x]))
        assert _same(batched[1], round_bits(-x, fmt, "nearest"))
        grad = jax.grad(lambda v: jnp.sum(kernel_round(v, fmt, interpret=self.INTERPRET) * v))(x)
        assert _same(grad, jax.grad(lambda v: jnp.sum(round_bits(v, fmt, "nearest") * v))(x))

    # -- matmul -----------------------------------------------------------------------------
    @pytest.mark.parametrize("arithmetic", MATMUL_CASES, ids=str)
    def test_matmul_is_bit_identical_to_the_xla_path(self, arithmetic):
        from boundlab.kernels import matmul

        keys = jax.random.split(jax.random.key(2), 2)
        for m, k, n in ((1, 1, 1), (13, 7, 37)):
            a = jax.random.normal(keys[0], (m, k), jnp.float64) * 4
            b = jax.random.normal(keys[1], (k, n), jnp.float64)
            want = arithmetic.matmul(arithmetic.cast(a), arithmetic.cast(b))
            assert _same(matmul(a, b, arithmetic, interpret=self.INTERPRET), want), (m, k, n)

    def test_matmul_adversarial_operands_ties_cancellation_overflow(self):
        from boundlab.kernels import matmul

        fp16 = Emulated("fp16", unroll=0)
        k = 9
        a = np.ones((4, k))
        b = np.zeros((k, 5))
        b[:, 0] = 2.0**-11  # partial sums that tie at every step
        b[:, 1] = [1.0, -1.0] * 4 + [2.0**-12]  # cancellation down to one tiny term
        b[:, 2] = 60000.0  # the sum overflows to inf
        b[:, 3] = [(-1) ** j * 2.0 ** (-j) for j in range(k)]
        b[:, 4] = -0.0  # signed zeros
        a[1] = -1.0
        a[2, ::2] = 3.0
        want = fp16.matmul(fp16.cast(a), fp16.cast(b))
        got = matmul(a, b, fp16, interpret=self.INTERPRET)
        assert _same(got, want) and bool(jnp.isinf(got[0, 2]))

    @settings(max_examples=2, deadline=None)
    @given(st.sampled_from([(1, 300, 2), (67, 3, 5), (2, 31, 97), (41, 1, 43)]))
    def test_matmul_shapes_that_are_not_tile_multiples(self, shape):
        from boundlab.kernels import matmul

        m, k, n = shape
        bf16 = Emulated("bf16", unroll=0)
        a = jax.random.uniform(jax.random.key(m), (m, k), jnp.float64, -1, 1)
        b = jax.random.uniform(jax.random.key(n), (k, n), jnp.float64, -1, 1)
        assert _same(matmul(a, b, bf16, interpret=self.INTERPRET), bf16.matmul(bf16.cast(a), bf16.cast(b)))

    def test_matmul_gradients_and_vmap_equal_the_reference(self):
        from boundlab.kernels.rounded_matmul import product

        t10 = Emulated("t10")
        a = t10.cast(jax.random.normal(jax.random.key(3), (3, 5, 6)))
        b = t10.cast(jax.random.normal(jax.random.key(4), (3, 6, 4)))
        assert _same(product(a, b, t10, interpret=self.INTERPRET), t10._product(a, b, None))

        def loss(f):
            return lambda x, y: jnp.sum(jnp.sin(f(x, y)))

        got = jax.grad(loss(lambda x, y: product(x, y, t10, interpret=self.INTERPRET)), argnums=(0, 1))(a, b)
        want = jax.grad(loss(lambda x, y: t10._product(x, y, None)), argnums=(0, 1))(a, b)
        assert _same(got[0], want[0]) and _same(got[1], want[1])

    def test_hardware_mode_is_within_its_rounding_bound(self):
        from boundlab.kernels import matmul

        size, k = 16, 40  # Triton's dot: k-blocks of at least 16, a power of two
        fp16 = Emulated("fp16", accumulation="blocked", block_size=size)
        a = fp16.cast(jax.random.normal(jax.random.key(5), (6, k)))
        b = fp16.cast(jax.random.normal(jax.random.key(6), (k, 7)))
        got = matmul(a, b, fp16, hardware=True, interpret=self.INTERPRET)
        exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
        magnitude = np.abs(np.asarray(a, np.float64)) @ np.abs(np.asarray(b, np.float64))
        # k/size roundings of the accumulator to fp16 and float32 sums inside each block
        blocks = -(-k // size)
        tolerance = (gamma(blocks, fp16.unit_roundoff) + gamma(size, 2.0**-24)) * (1 + 2.0**-10) * magnitude
        assert np.all(np.abs(np.asarray(got, np.float64) - exact) <= tolerance)

    def test_emulated_with_the_kernel_runs_the_transformer_unchanged(self):
        from boundlab.models.paper import forward, init

        params, X = init(jax.random.key(7), "figure1", d=4, n=3, D=5, L=2)
        for accumulation in ("recursive", "blocked"):
            xla = Emulated("bf16", accumulation=accumulation, block_size=2, kernel="xla")
            pallas = Emulated("bf16", accumulation=accumulation, block_size=2, kernel="pallas")
            assert pallas.uses_kernel and not xla.uses_kernel
            run = jax.jit(forward, static_argnums=2)
            assert _same(run(params, X, pallas), run(params, X, xla))

    def test_figure_1_is_the_same_with_the_kernel(self):
        import dataclasses

        from boundlab.experiments import Figure1, figure1

        config = Figure1(d=3, n=3, D=3, L=2, inits=4, precisions=(10, 16), bound_samples=0, chunk=4, kernel="xla")
        xla = figure1(config, progress=False)
        pallas = figure1(dataclasses.replace(config, kernel="pallas"), progress=False)
        # the emulated outputs are the same bits (see the transformer test above), so rho_c is too;
        # the Frobenius norms around them are float64 sums whose order XLA picks per program
        assert _same(pallas.data["componentwise"], xla.data["componentwise"])
        np.testing.assert_allclose(pallas.data["normwise"], xla.data["normwise"], rtol=8 * 2.0**-53)

    # -- matrix units ------------------------------------------------------------------
    @pytest.mark.parametrize("recipe", [{}, {"promote_every": 16}, {"split_k": 2}, {"promote_every": 16, "split_k": 2}])
    def test_unit_kernel_is_the_xla_path_bit_for_bit(self, recipe):
        from boundlab.kernels.unit_matmul import product
        from boundlab.matrix_units import UNITS, recipe_dot, get_unit

        fixtures = np.load(__import__("pathlib").Path(__file__).parent / "data" / "mma_fixtures.npz")
        for name in ("ada-mma-fp8_e4m3-fp32", "turing-mma-fp16-fp16", "cdna3-mfma-bf16-fp32"):
            unit = get_unit(name, **(recipe if UNITS[name].group <= 16 else {}))
            a = fixtures[f"a/{unit.inputs}"][:12].astype(np.float64)  # ragged K = 44, the adversarial rows
            bt = fixtures[f"b/{unit.inputs}"][5:14].astype(np.float64)
            # both compiled (eagerly each operation of the reference would be dispatched on its own)
            want = jax.jit(recipe_dot, static_argnums=0)(unit, a[:, None, :], bt[None, :, :],
                                                          jnp.zeros((12, 9), jnp.float64))
            got = jax.jit(lambda a, bt: product(a, bt, unit, block_m=8, block_n=8, interpret=self.INTERPRET))(a, bt)
            assert _same(got, want), (name, recipe)

    def test_emulated_on_a_unit_runs_the_transformer_with_the_kernel(self):
        from boundlab.models.paper import forward, init

        params, X = init(jax.random.key(8), "figure4", d=4, n=3, D=5, L=1)
        for scaling in (None, "tensor"):
            unit = __import__("boundlab.matrix_units", fromlist=["get_unit"]).get_unit(
                "hopper-wgmma-fp8_e4m3-fp32", scaling=scaling, promote_every=32)
            xla = Emulated("bf16", accumulation=unit, kernel="xla")
            pallas = Emulated("bf16", accumulation=unit, kernel="pallas")
            run = jax.jit(forward, static_argnums=2)
            assert _same(run(params, X, pallas), run(params, X, xla))


class TestKernels(_KernelSuite):
    INTERPRET = False


class TestKernelsInterpret(_KernelSuite):
    INTERPRET = True


def _lowered_for_cuda(f, *shapes):
    # the program a GPU run would compile, lowered on this CPU host (jax.export): Pallas's GPU
    # lowering runs here; only Triton's own compilation to PTX is left to the GPU
    from jax import export

    triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    return export.export(jax.jit(f), platforms=["cuda"], disabled_checks=[triton])(
        *(jax.ShapeDtypeStruct(s, d) for s, d in shapes)).mlir_module()


@pytest.mark.parametrize("which", ["round", "recursive", "blocked", "hardware", "unit"])
def test_each_kernel_lowers_for_cuda_to_one_triton_call(which):
    # jax >= 0.8 lowers pallas_call on GPUs to Mosaic GPU unless told otherwise, and these kernels
    # (Triton's model) fail there at lowering; they ask for Triton (kernels.common.compiler_params)
    import dataclasses

    from boundlab.kernels.rounded_matmul import product
    from boundlab.kernels.unit_matmul import product as unit_product
    from boundlab.matrix_units import get_unit

    from boundlab.kernels import round as kernel_round

    t20 = Emulated("t20", unroll=0)
    f32, f64 = jnp.float32, jnp.float64
    programs = {
        "round": (lambda x: kernel_round(x, get_format("fp16"), "nearest", interpret=False), ((3000,), f32)),
        "recursive": (lambda a, b: product(a, b, t20, interpret=False), ((40, 768), f64), ((768, 50), f64)),
        "blocked": (lambda a, b: product(a, b, Emulated("bf16", accumulation="blocked", block_size=32, unroll=0),
                                         interpret=False), ((40, 70), f64), ((70, 50), f64)),
        "hardware": (lambda a, b: product(a, b, dataclasses.replace(Emulated("fp16", unroll=0), accumulation="blocked",
                                                                    block_size=32), hardware=True, interpret=False),
                     ((40, 70), f32), ((70, 50), f32)),
        "unit": (lambda a, bt: unit_product(a, bt, get_unit("hopper-wgmma-fp8_e4m3-fp32"), interpret=False),
                 ((40, 70), f64), ((50, 70), f64)),
    }
    f, *shapes = programs[which]
    text = _lowered_for_cuda(f, *shapes)
    assert text.count("__gpu$xla.gpu.triton") == 1 and "mosaic" not in text.lower(), which


def test_dispatch_choices_and_refusals():
    assert not Emulated("bf16").uses_kernel or jax.default_backend() != "cpu"  # auto: XLA on the CPU
    assert not Emulated("bf16", mode="stochastic", kernel="auto").uses_kernel
    with pytest.raises(ValueError, match="kernel must be one of"):
        Emulated("bf16", kernel="triton")
    with pytest.raises(ValueError, match="pairwise"):
        Emulated("bf16", accumulation="pairwise", kernel="pallas")
    assert "kernel=pallas" in str(Emulated("bf16", kernel="pallas"))


def test_import_boundlab_needs_no_pallas():
    code = ("import sys, boundlab, jax; boundlab.Emulated('bf16').matmul; "
            "assert not any(m.startswith('jax.experimental.pallas') for m in sys.modules), 'pallas imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
