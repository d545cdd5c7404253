"""Named low-precision training recipes: where each part of a training step rounds.

A ``Recipe`` says which arithmetic evaluates the loss and its gradient (``compute``: every
primitive of the forward and the backward pass, Model 4.1, through ``boundlab.emulate``), the
format the weights are stored in (``master``), the format the optimizer's state and updates are
stored in (``state``; its elementwise algebra runs in float32, as GPU kernels on bf16 tensors
do), how the weight update w + delta is stored (``update``: rounded
to nearest, stochastically, or Kahan-compensated), and whether the loss is scaled (``loss_scale``:
the dynamic rule of mixed-precision training, Micikevicius et al. 2018: multiply the loss by S,
divide the gradients by S; a non-finite gradient skips the step and halves S; ``growth_interval``
finite steps in a row double S, up to ``max_scale``).  ``None`` formats are float64, exact.

The named recipes (``RECIPES``):

* ``float64``: everything exact (the reference; bit for bit a native float64 step);
* ``float32``: compute, weights and optimizer state in float32;
* ``bf16-mixed``: compute in bf16, float32 master weights and optimizer state (the usual mixed
  precision);
* ``bf16-pure``: compute, weights and optimizer state in bf16, updates rounded to nearest (small
  updates are rounded away: Zamirai et al., "Revisiting BFloat16 Training", 2020);
* ``bf16-pure-sr``: the same with stochastically rounded updates;
* ``bf16-pure-kahan``: the same with Kahan-compensated updates (a bf16 compensation per weight);
* ``fp16-mixed``: compute in fp16, float32 master weights, no loss scaling (small gradients
  underflow);
* ``fp16-mixed-scaled``: the same with dynamic loss scaling;
* ``bf16-autocast``: autocast's split (``Mixed`` with ``GEMMS``): the dot products on Ampere's
  bf16 tensor core (bf16 operands, exact products, float32 accumulation as the unit does it,
  bf16 results), every other operation of the forward and backward pass in float32; float32
  master weights and optimizer state;
* ``fp8-gemms``: ``bf16-mixed`` with the GEMMs on Hopper's wgmma FP8 e4m3 path, DeepSeek-V3's
  1 x 128 block scales and promotion every 128 (``boundlab.matrix_units``).
"""

from __future__ import annotations

import dataclasses

from boundlab.arithmetic import Emulated, Exact
from boundlab.emulation import Choice, emulate, mixed
from boundlab.formats import get_format

UPDATES = ("nearest", "stochastic", "kahan")
GEMMS = Choice(primitives=frozenset({"dot_general"}), invert=True)  # every site but the dot products: high


@dataclasses.dataclass(frozen=True)
class Mixed:
    """A compute arithmetic per site (``boundlab.emulation.mixed``): the sites that ``choose``
    picks in ``high``, the others in ``low``, each operation's operands first rounded into its
    site's format; ``inputs`` is the format the weights and data enter in.  ``GEMMS`` puts the
    dot products in ``low`` and everything else in ``high``: autocast's rule, GEMMs on the
    tensor core, softmax, norms, reductions and the loss in float32.  ``fmt`` and ``mode`` are
    the low side's (the narrow format: loss scaling and unit roundoffs are about it)."""

    low: Emulated
    high: Emulated | Exact
    choose: Choice = GEMMS
    inputs: str = "high"

    @property
    def fmt(self):
        return self.low.fmt

    @property
    def mode(self) -> str:
        modes = {getattr(self.low, "mode", "nearest"), getattr(self.high, "mode", "nearest")}
        return "stochastic" if "stochastic" in modes else "nearest"


def evaluate(fn, compute):
    """``fn`` evaluated in ``compute``: ``boundlab.emulate`` for one arithmetic, ``mixed`` for a
    ``Mixed`` one; the result takes ``fn``'s arguments and ``key=``."""
    if isinstance(compute, Mixed):
        return mixed(fn, compute.low, compute.high, compute.choose, inputs=compute.inputs)
    return emulate(fn, compute)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Where a training step rounds (see the module docstring).  Frozen and hashable: a static
    argument of ``jit``."""

    name: str
    compute: Exact | Emulated | Mixed = Exact()
    master: str | None = None
    state: str | None = None
    update: str = "nearest"
    loss_scale: str | None = None
    initial_scale: float = 2.0**15
    growth_interval: int = 100
    max_scale: float = 2.0**15

    def __post_init__(self):
        for name in ("master", "state"):
            if getattr(self, name) is not None:
                get_format(getattr(self, name))  # a one-line error naming the presets
        if self.update not in UPDATES:
            raise ValueError(f"recipe {self.name}: update must be one of {UPDATES}, got {self.update!r}")
        if self.update != "nearest" and self.master is None:
            raise ValueError(f"recipe {self.name}: {self.update} updates need a master format (the weights' storage)")
        if self.loss_scale not in (None, "dynamic"):
            raise ValueError(f"recipe {self.name}: loss_scale must be None or 'dynamic', got {self.loss_scale!r}")
        if self.loss_scale is not None:
            fmt = getattr(self.compute, "fmt", None)
            fmt = None if fmt is None else get_format(fmt)
            if fmt is None or fmt.emin <= get_format("fp32").emin:
                raise ValueError(f"recipe {self.name}: loss scaling keeps small gradients above the underflow threshold "
                                 f"of a narrow exponent range (fp16's); the compute arithmetic "
                                 f"{'is exact' if fmt is None else f'{fmt.name or fmt} has emin = {fmt.emin}'}, "
                                 f"float32's range or wider: drop loss_scale")
        if self.growth_interval < 1 or not 0 < self.initial_scale <= self.max_scale:
            raise ValueError(f"recipe {self.name}: needs growth_interval >= 1 and 0 < initial_scale <= max_scale")

    @property
    def update_arithmetic(self):
        """The arithmetic of w + delta: the master format, in the update's rounding mode."""
        if self.master is None:
            return Exact()
        return Emulated(self.master, mode="stochastic" if self.update == "stochastic" else "nearest")

    @property
    def state_arithmetic(self):
        """The arithmetic of the optimizer's elementwise algebra: float32 for states of at most
        float32's precision (a GPU kernel on bf16 or fp16 tensors computes each element in float32
        registers with the hyperparameters as float32 scalars; Model 4.1 in bf16 itself would
        round Adam's beta2 = 0.999 to 1 and divide by a zero bias correction), the state's own
        format above it; the results are then stored in the state format (``state_format``)."""
        if self.state is None:
            return Exact()
        return Emulated(self.state if get_format(self.state).precision > 24 else "fp32")

    @property
    def state_format(self):
        """The arithmetic whose rounding stores the optimizer's state and updates."""
        return Exact() if self.state is None else Emulated(self.state)


def _recipes() -> dict:
    from boundlab.matrix_units import get_unit

    fp8_unit = get_unit("hopper-wgmma-fp8_e4m3-fp32", scaling="block")
    recipes = [
        Recipe("float64"),
        Recipe("float32", Emulated("fp32"), "fp32", "fp32"),
        Recipe("bf16-mixed", Emulated("bf16"), "fp32", "fp32"),
        Recipe("bf16-pure", Emulated("bf16"), "bf16", "bf16"),
        Recipe("bf16-pure-sr", Emulated("bf16"), "bf16", "bf16", update="stochastic"),
        Recipe("bf16-pure-kahan", Emulated("bf16"), "bf16", "bf16", update="kahan"),
        Recipe("fp16-mixed", Emulated("fp16"), "fp32", "fp32"),
        Recipe("fp16-mixed-scaled", Emulated("fp16"), "fp32", "fp32", loss_scale="dynamic"),
        Recipe("bf16-autocast", Mixed(Emulated("bf16", accumulation="ampere-mma-bf16-fp32"), Emulated("fp32")),
               "fp32", "fp32"),
        Recipe("fp8-gemms", Emulated("bf16", accumulation=fp8_unit), "fp32", "fp32"),
    ]
    return {recipe.name: recipe for recipe in recipes}


RECIPES = _recipes()


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A named recipe (``RECIPES``) or the recipe itself."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; boundlab knows {', '.join(RECIPES)}")
    return RECIPES[recipe]
