"""Section 4's rounding-error bounds, evaluated on actual weights and inputs.

One function per statement: the parts of a block (Lemmas 4.3-4.21 with their corollaries and
remarks, Corollary 4.23, and the sigma_min-free variants of Lemmas 4.17 and 4.21), the sub-blocks
(Lemmas 4.25-4.28), the block (Lemma 4.29) and the network (Theorem 4.30, parts 1 and 2).  Each
returns a ``Bound``.  ``boundlab.analyze`` evaluates all of them on one case beside the errors
measured under emulation.

>>> import jax.numpy as jnp
>>> from boundlab import bounds
>>> record = bounds.lemma_4_6(jnp.array([1.0, -2.0, 3.0]), u=2.0**-11)  # u: required, keyword-only
>>> record.statement, float(record.coefficient), bool(record.valid)  # (d/2 + 3) u
(<Statement.LEMMA_4_6: 'Lemma 4.6'>, 4.5, True)
"""

from boundlab.bounds.record import Bound as Bound
from boundlab.bounds.statement import Statement as Statement
from boundlab.bounds.components import corollary_4_9 as corollary_4_9
from boundlab.bounds.components import corollary_4_12 as corollary_4_12
from boundlab.bounds.components import corollary_4_16 as corollary_4_16
from boundlab.bounds.components import corollary_4_20 as corollary_4_20
from boundlab.bounds.components import corollary_4_20_columns as corollary_4_20_columns
from boundlab.bounds.components import corollary_4_23 as corollary_4_23
from boundlab.bounds.components import lemma_4_3 as lemma_4_3
from boundlab.bounds.components import lemma_4_6 as lemma_4_6
from boundlab.bounds.components import lemma_4_10 as lemma_4_10
from boundlab.bounds.components import lemma_4_11 as lemma_4_11
from boundlab.bounds.components import lemma_4_14 as lemma_4_14
from boundlab.bounds.components import lemma_4_17 as lemma_4_17
from boundlab.bounds.components import lemma_4_17_absolute as lemma_4_17_absolute
from boundlab.bounds.components import lemma_4_17_columns as lemma_4_17_columns
from boundlab.bounds.components import lemma_4_19 as lemma_4_19
from boundlab.bounds.components import lemma_4_19_columns as lemma_4_19_columns
from boundlab.bounds.components import lemma_4_21 as lemma_4_21
from boundlab.bounds.components import lemma_4_21_absolute as lemma_4_21_absolute
from boundlab.bounds.components import remark_4_13 as remark_4_13
from boundlab.bounds.components import remark_4_18 as remark_4_18
from boundlab.bounds.components import remark_4_22 as remark_4_22

from boundlab.bounds.subblocks import lemma_4_25 as lemma_4_25
from boundlab.bounds.subblocks import lemma_4_26 as lemma_4_26
from boundlab.bounds.subblocks import lemma_4_27 as lemma_4_27
from boundlab.bounds.subblocks import lemma_4_28 as lemma_4_28
from boundlab.bounds.network import BlockFactors as BlockFactors
from boundlab.bounds.network import block_factors as block_factors
from boundlab.bounds.network import block_record as block_record
from boundlab.bounds.network import lemma_4_29 as lemma_4_29
from boundlab.bounds.network import network_factors as network_factors
from boundlab.bounds.network import theorem_4_30 as theorem_4_30

__all__ = ["BlockFactors", "Bound", "Statement", "block_factors", "block_record", "corollary_4_9", "corollary_4_12", "corollary_4_16", "corollary_4_20",
           "corollary_4_20_columns", "corollary_4_23", "lemma_4_3", "lemma_4_6", "lemma_4_10", "lemma_4_11",
           "lemma_4_14", "lemma_4_17", "lemma_4_17_absolute", "lemma_4_17_columns", "lemma_4_19",
           "lemma_4_19_columns", "lemma_4_21", "lemma_4_21_absolute", "lemma_4_25", "lemma_4_26", "lemma_4_27",
           "lemma_4_28", "lemma_4_29", "network_factors", "remark_4_13", "remark_4_18", "remark_4_22", "theorem_4_30"]

