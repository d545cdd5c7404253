"""First-order rounding-error bounds of any JAX function by automatic differentiation."""

from boundlab.sensitivity.bound import FirstOrder as FirstOrder
from boundlab.sensitivity.bound import first_order as first_order
from boundlab.sensitivity.bound import lambda_for as lambda_for

__all__ = ["FirstOrder", "first_order", "lambda_for"]
