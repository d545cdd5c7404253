"""Section 4's rounding-error bounds, evaluated on actual weights and inputs.

This release covers the statements about the parts of a block (Lemmas 4.3-4.21, with their
corollaries and remarks, and the sigma_min-free variants of Lemmas 4.17 and 4.21); the sub-block
and network statements (Lemmas 4.25-4.29, Theorem 4.30) and ``analyze`` follow.

>>> import jax.numpy as jnp
>>> from boundlab import bounds
>>> record = bounds.lemma_4_6(jnp.array([1.0, -2.0, 3.0]), u=2.0**-11)
>>> record.statement, float(record.coefficient), bool(record.valid)  # (d/2 + 3) u
('Lemma 4.6', 4.5, True)
"""

from boundlab.bounds.record import Bound as Bound
from boundlab.bounds.modules import corollary_4_9 as corollary_4_9
from boundlab.bounds.modules import corollary_4_12 as corollary_4_12
from boundlab.bounds.modules import corollary_4_16 as corollary_4_16
from boundlab.bounds.modules import corollary_4_20 as corollary_4_20
from boundlab.bounds.modules import lemma_4_3 as lemma_4_3
from boundlab.bounds.modules import lemma_4_6 as lemma_4_6
from boundlab.bounds.modules import lemma_4_10 as lemma_4_10
from boundlab.bounds.modules import lemma_4_11 as lemma_4_11
from boundlab.bounds.modules import lemma_4_14 as lemma_4_14
from boundlab.bounds.modules import lemma_4_17 as lemma_4_17
from boundlab.bounds.modules import lemma_4_17_absolute as lemma_4_17_absolute
from boundlab.bounds.modules import lemma_4_19 as lemma_4_19
from boundlab.bounds.modules import lemma_4_21 as lemma_4_21
from boundlab.bounds.modules import lemma_4_21_absolute as lemma_4_21_absolute
from boundlab.bounds.modules import remark_4_13 as remark_4_13
from boundlab.bounds.modules import remark_4_18 as remark_4_18
from boundlab.bounds.modules import remark_4_22 as remark_4_22

__all__ = ["Bound", "corollary_4_9", "corollary_4_12", "corollary_4_16", "corollary_4_20", "lemma_4_3", "lemma_4_6", "lemma_4_10", "lemma_4_11", "lemma_4_14", "lemma_4_17", "lemma_4_17_absolute", "lemma_4_19", "lemma_4_21", "lemma_4_21_absolute", "remark_4_13", "remark_4_18", "remark_4_22"]

from boundlab.bounds.network import block_terms as block_terms  # noqa: E402
from boundlab.bounds.network import lemma_4_29 as lemma_4_29  # noqa: E402
from boundlab.bounds.network import theorem_4_30 as theorem_4_30  # noqa: E402

__all__ += ["block_terms", "lemma_4_29", "theorem_4_30"]
