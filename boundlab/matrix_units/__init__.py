"""The arithmetic of GPU matrix-multiply units (tensor cores, matrix cores), bit for bit.

A matrix unit does not round each product and partial sum (Model 4.1).  Per instruction it
multiplies a group of L products exactly, aligns them and the accumulator c to the largest
exponent among them, truncates each aligned term to F fractional bits, adds them exactly in a
fused adder, and writes the sum back with its own rounding rho; a dot product of length K chains
ceil(K / L) such steps through the accumulator (the T-FDPA model of MMA-Sim: Zhang et al.,
"MMA-Sim", arXiv 2511.10909, whose PyTorch reference ``mmasim`` 2.1.1 the fixtures in
``tests/data/mma_fixtures.npz`` come from; ``tests/data/make_mma_fixtures.py`` writes them).
In exact terms, one step computes

    d = rho( sum_{i <= L} trunc_F(a_i b_i / 2^E) 2^E + trunc_F(c / 2^E) 2^E ),
    E = max(exponents of a_i b_i and c; a zero term counts as e_zero),

with trunc_F(x) = sign(x) floor(|x| 2^F) 2^-F, and rho one of: round toward zero into float32
(``"RZ-FP32"``), toward zero with 13 fractional bits and float32's exponent range (``"RZ-E8M13"``,
the FP8 path of Ada and Hopper's wgmma: DeepSeek-V3's "about 14 bits"), round to nearest into
float16 (``"RNE-FP16"``), or into float32 (``"RNE-FP32"``).

AMD's CDNA3 matrix cores (MFMA) fuse in two levels (MMA-Sim's TR-FDPA, ``kind="TR-FDPA"``): the
products alone are aligned to their largest exponent e_dot and truncated to F bits and summed;
that sum, floored to F2 + 1 fractional bits, and c, floored to F bits, are aligned to
max(e_dot, e_c) and added; the sum is normalised, floored to F2 bits and rounded to nearest
into float32.  A zero product takes no part in the alignment; a product beyond float32's range
is infinite.

On top of the unit, what software does with it (``MatrixUnit.recipe``):

* promotion every N_C products (DeepSeek-V3, arXiv 2412.19437, Section 3.3.2: N_C = 128): the
  unit accumulates each chunk of N_C products from zero and the chunk's result is added into a
  float32 total with round to nearest (on the CUDA cores); c starts the total;
* split-K into S slices (each a multiple of L products, the last one shorter): each slice is
  computed on its own (promoted inside when asked), and the S results are added into c in
  float32 with round to nearest, in slice order;
* FP8 scaling of the operands (``scaling="tensor"``: one float32 scale per operand,
  s = fl32(max |X| / max_finite); ``"block"``: one per row of A and column of B and per block of
  ``scale_block`` = 128 entries along K, DeepSeek-V3's 1 x 128 tiles): X is stored as
  fl_fmt(X / s), and the result is scaled back in float32 (fl32(fl32(s_a s_b) P), per chunk for
  blocks, where promotion every ``scale_block`` products does the dequantisation).

Values are held in float64 (each input a number of its format, as everywhere in boundlab), where
every step above is exact: a product of two significands of <= 24 bits, shifted and truncated to
F <= 25 fractional bits, is an integer multiple of 2^-F below 2^2, and a group of at most 33 of
them sums without rounding.  Vectorised, jit- and vmap-friendly; the chain is a ``lax.scan``.
"""

from boundlab.matrix_units.catalogue import UNITS as UNITS
from boundlab.matrix_units.catalogue import get_unit as get_unit
from boundlab.matrix_units.chain import dot as dot
from boundlab.matrix_units.chain import matmul as matmul
from boundlab.matrix_units.chain import matmul_jit as matmul_jit
from boundlab.matrix_units.chain import promoted_dot as promoted_dot
from boundlab.matrix_units.chain import recipe_dot as recipe_dot
from boundlab.matrix_units.error_bounds import dot_error_bound as dot_error_bound
from boundlab.matrix_units.error_bounds import first_order_error as first_order_error
from boundlab.matrix_units.error_bounds import step_constants as step_constants
from boundlab.matrix_units.scaling import product as product
from boundlab.matrix_units.scaling import quantize as quantize
from boundlab.matrix_units.unit import KINDS as KINDS
from boundlab.matrix_units.unit import SCALINGS as SCALINGS
from boundlab.matrix_units.unit import WRITE_BACKS as WRITE_BACKS
from boundlab.matrix_units.unit import MatrixUnit as MatrixUnit

__all__ = ["KINDS", "SCALINGS", "UNITS", "WRITE_BACKS", "MatrixUnit", "dot", "dot_error_bound", "first_order_error",
           "get_unit", "matmul", "matmul_jit", "product", "promoted_dot", "quantize", "recipe_dot", "step_constants"]
