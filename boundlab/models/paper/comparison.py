"""Emulated forward next to its exact reference, with the measured errors."""

from __future__ import annotations

from typing import NamedTuple

import jax

from boundlab.arithmetic import Exact
from boundlab.errors import relative_componentwise, relative_normwise
from boundlab.models.paper.network import forward


class Comparison(NamedTuple):
    """One emulated run beside its exact reference (a pytree: vmappable).

    ``exact`` is the float64 forward of the *rounded* weights and input, the reference Model 4.1
    and Theorem 4.30 speak about; ``componentwise`` and ``normwise`` are rho_c and rho (2-norm of
    vec) of ``emulated`` against it.  With ``against_original=True`` the forward of the
    unrounded operands and the errors against it are filled in as well (else ``None``).
    """

    emulated: jax.Array
    exact: jax.Array
    componentwise: jax.Array
    normwise: jax.Array
    exact_original: jax.Array | None = None
    componentwise_original: jax.Array | None = None
    normwise_original: jax.Array | None = None


def compare(params, X, arithmetic, norm: str = "layer", key=None, max_shift: bool = False,
            against_original: bool = False) -> Comparison:
    """Run ``forward`` under ``arithmetic`` and under ``Exact()`` and measure the error.

    >>> import jax
    >>> from boundlab import Emulated
    >>> from boundlab.models.paper import init
    >>> params, X = init(jax.random.key(0), "figure1", d=4, n=3, D=4, L=2)
    >>> result = compare(params, X, Emulated("t24"))
    >>> bool(0 < result.componentwise < 1e-4)
    True
    """
    rounded_params = jax.tree.map(arithmetic.cast, params)
    rounded_X = arithmetic.cast(X)
    emulated = forward(rounded_params, rounded_X, arithmetic, norm, key, max_shift, cast=False)
    exact_arithmetic = Exact()
    to_exact = exact_arithmetic.cast
    exact = forward(jax.tree.map(to_exact, rounded_params), to_exact(rounded_X), exact_arithmetic, norm,
                    max_shift=max_shift, cast=False)
    emulated64 = to_exact(emulated)
    result = Comparison(emulated, exact, relative_componentwise(emulated64, exact), relative_normwise(emulated64, exact))
    if against_original:
        original = forward(params, X, exact_arithmetic, norm, max_shift=max_shift)
        result = result._replace(exact_original=original,
                                 componentwise_original=relative_componentwise(emulated64, original),
                                 normwise_original=relative_normwise(emulated64, original))
    return result
