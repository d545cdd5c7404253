"""Any JAX function under emulated rounding: ``emulate(f, arithmetic)`` (a jaxpr interpreter)."""

from boundlab.emulation.api import emulate as emulate
from boundlab.emulation.interpreter import Site as Site
from boundlab.emulation.interpreter import UnsupportedPrimitive as UnsupportedPrimitive

__all__ = ["Site", "UnsupportedPrimitive", "emulate"]
