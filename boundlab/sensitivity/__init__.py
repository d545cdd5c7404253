"""First-order rounding-error bounds of any JAX function by automatic differentiation."""

from boundlab.sensitivity.first_order import FirstOrder as FirstOrder
from boundlab.sensitivity.first_order import first_order as first_order
from boundlab.sensitivity.first_order import lambda_for as lambda_for

__all__ = ["FirstOrder", "first_order", "lambda_for"]
