"""Condition numbers (Section 3): from autodiff (Lemma 3.3) and from the paper's closed forms.

>>> import jax.numpy as jnp
>>> from boundlab.condition import componentwise, closed_forms
>>> from boundlab.models.paper import rms_norm
>>> x = jnp.array([1.0, -2.0, 3.0])
>>> float(componentwise(rms_norm, x).value), float(closed_forms.rms_norm(x).kappa_cc)  # Lemma 3.6
(1.8571428571428572, 1.8571428571428572)
"""

from boundlab.condition import closed_forms as closed_forms
from boundlab.condition.autodiff import Condition as Condition
from boundlab.condition.autodiff import componentwise as componentwise
from boundlab.condition.autodiff import jacobian as jacobian
from boundlab.condition.autodiff import mixed as mixed
from boundlab.condition.autodiff import normwise as normwise
from boundlab.condition.autodiff import operator_norm as operator_norm
from boundlab.condition.autodiff import vec as vec
from boundlab.condition.side_by_side import Row as Row
from boundlab.condition.side_by_side import condition_report as condition_report
from boundlab.condition.side_by_side import format_report as format_report

__all__ = ["Condition", "Row", "closed_forms", "componentwise", "condition_report", "format_report", "jacobian",
           "mixed", "normwise", "operator_norm", "vec"]
