"""Any JAX function under emulated rounding: ``emulate(f, arithmetic)`` (a jaxpr interpreter), and
in two formats site by site: ``mixed(f, low, high, choose)``."""

from boundlab.emulation.api import emulate as emulate
from boundlab.emulation.interpreter import Site as Site
from boundlab.emulation.mixed_precision import Choice as Choice
from boundlab.emulation.mixed_precision import MixedHandler as MixedHandler
from boundlab.emulation.mixed_precision import exact_at_rounded_inputs as exact_at_rounded_inputs
from boundlab.emulation.mixed_precision import mixed as mixed
from boundlab.emulation.mixed_precision import mixed_by_mask as mixed_by_mask
from boundlab.emulation.mixed_precision import sites as sites
from boundlab.emulation.interpreter import UnsupportedPrimitive as UnsupportedPrimitive

__all__ = ["Choice", "MixedHandler", "Site", "UnsupportedPrimitive", "emulate", "exact_at_rounded_inputs", "mixed", "mixed_by_mask", "sites"]
