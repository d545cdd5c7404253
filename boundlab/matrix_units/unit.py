"""One matrix unit's description: ``MatrixUnit`` (its instruction's arithmetic and the recipe
software runs on it) and the names its fields take.  The arithmetic itself is in
``boundlab.matrix_units.chain``; the package docstring states it."""

from __future__ import annotations

import dataclasses

from boundlab.formats import get_format

WRITE_BACKS = ("RZ-FP32", "RZ-E8M13", "RNE-FP16", "RNE-FP32")
KINDS = ("T-FDPA", "TR-FDPA", "GTR-FDPA")
SCALINGS = (None, "tensor", "block")
_FP32 = get_format("fp32")
ABSENT = -(2**20)  # the exponent of a term that takes no part in a step


@dataclasses.dataclass(frozen=True)
class MatrixUnit:
    """One matrix-multiply instruction's arithmetic (see the module docstring), and the recipe
    that software runs on it.

    Hardware: ``inputs``, the format of A and B (``fp16``, ``bf16``, ``tf32``, ``fp8_e4m3``,
    ``fp8_e5m2``); ``accumulator``: ``fp32`` or ``fp16`` (C and D); ``F``: fractional bits kept
    after alignment; ``group``: products fused per step (L); ``write_back``: rho; ``e_zero``: the
    exponent a zero term is given when the largest exponent is found; ``kind``: ``"T-FDPA"``
    (NVIDIA) or ``"TR-FDPA"`` (AMD CDNA3, with ``F2``); ``source``: where the parameters come from.

    Recipe (``unit.recipe(...)``): ``promote_every`` (N_C, a multiple of ``group``), ``split_k``
    (slices), ``scaling`` (None, ``"tensor"`` or ``"block"``) and ``scale_block``.

    Hashable: usable as ``Emulated(fmt, accumulation=unit)`` and as a static jit argument.
    """

    name: str
    inputs: str
    accumulator: str
    F: int
    group: int
    write_back: str
    e_zero: int
    source: str = "MMA-Sim (arXiv 2511.10909), mmasim 2.1.1: nv_ptx/sim.py"
    kind: str = "T-FDPA"
    F2: int = 0
    promote_every: int | None = None
    split_k: int = 1
    scaling: str | None = None
    scale_block: int = 128

    def __post_init__(self):
        if self.write_back not in WRITE_BACKS:
            raise ValueError(f"write_back must be one of {WRITE_BACKS}, got {self.write_back!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 1 <= self.F <= 30 or self.group < 1 or (self.kind != "T-FDPA" and not self.F <= self.F2 <= 40):
            raise ValueError(f"F must be in [1, 30] (F2 in [F, 40] for TR-FDPA) and group >= 1, got F = {self.F}, "
                             f"F2 = {self.F2}, group = {self.group}")
        get_format(self.inputs)  # a clear error for an unknown format
        if self.accumulator not in ("fp32", "fp16"):
            raise ValueError(f"accumulator must be fp32 or fp16, got {self.accumulator!r}")
        self._check_recipe()

    def _check_recipe(self):
        multiples = ", ".join(str(self.group * m) for m in (1, 2, 4, 8))
        if self.scaling not in SCALINGS:
            raise ValueError(f"{self.name}: scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if not isinstance(self.scale_block, int) or self.scale_block < 1 or self.scale_block % self.group:
            raise ValueError(f"{self.name}: scale_block must be a positive multiple of the group length "
                             f"{self.group} ({multiples}, ...), got {self.scale_block!r}")
        every = self.promote_every
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1
                                  or every % self.group):
            raise ValueError(f"{self.name}: promote_every must be a positive multiple of the group length "
                             f"{self.group} ({multiples}, ...) or None, got {every!r}")
        if self.scaling == "block" and every not in (None, self.scale_block):
            raise ValueError(f"{self.name}: block scaling dequantises at each promotion, so promote_every must "
                             f"equal scale_block = {self.scale_block} (or be None), got {every}")
        if not isinstance(self.split_k, int) or isinstance(self.split_k, bool) or self.split_k < 1:
            raise ValueError(f"{self.name}: split_k must be a positive int, got {self.split_k!r}")

    def recipe(self, promote_every: int | None = None, split_k: int = 1, scaling: str | None = None,
               scale_block: int = 128) -> "MatrixUnit":
        """This unit with a software recipe: promotion every ``promote_every`` products into a
        float32 total, ``split_k`` slices, FP8 ``scaling`` of the operands (``"block"`` sets
        ``promote_every = scale_block`` when it is None)."""
        if scaling == "block" and promote_every is None:
            promote_every = scale_block
        return dataclasses.replace(self, promote_every=promote_every, split_k=split_k, scaling=scaling,
                                   scale_block=scale_block)

    @property
    def hardware(self) -> "MatrixUnit":
        """The unit without a recipe."""
        return dataclasses.replace(self, promote_every=None, split_k=1, scaling=None, scale_block=128)

    def __str__(self) -> str:
        parts = [f"promote every {self.promote_every}"] if self.promote_every else []
        parts += [f"split-K {self.split_k}"] if self.split_k > 1 else []
        parts += [f"{self.scaling} scaling" + (f" ({self.scale_block})" if self.scaling == "block" else "")] \
            if self.scaling else []
        return self.name + (f" ({', '.join(parts)})" if parts else "")
