"""Pallas custom-precision kernels, installed as ``boundlab.kernels``.

* ``round(x, fmt, mode, random_bits)``: the bit-level rounding of ``boundlab.rounding`` as one
  fused elementwise kernel (``boundlab.kernels.rounding``);
* ``matmul(a, b, arithmetic)``: C = A B with every product and partial sum rounded in the
  arithmetic's order (recursive or blocked), the accumulator in registers over the K loop, and a
  ``hardware=True`` mode with an MMA per k-block (``boundlab.kernels.rounded_matmul``);
* ``unit_matmul.product(a, bt, unit)``: C = A B on a tensor-core model (``boundlab.matrix_units``:
  fused groups, alignment, truncation, write-back, promotion, split-K), bit for bit the XLA path.

Each kernel's reference is the existing XLA code path (``round_bits``, ``Emulated._product``);
the kernels are bit for bit equal to it in the exact modes.  ``Emulated(..., kernel="pallas")``
routes the arithmetic's dot products through ``matmul``; ``kernel="auto"`` does so on GPU/TPU only.
On the CPU Pallas runs in interpret mode only (``interpret=None`` picks it there).  This package
is imported lazily, so ``import boundlab`` never needs Pallas or a GPU.
"""

from boundlab.kernels.rounded_matmul import matmul as matmul
from boundlab.kernels.rounding import round as round  # noqa: A004 (the kernel's name)

__all__ = ["matmul", "round"]
