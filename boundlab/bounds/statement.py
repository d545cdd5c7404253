"""The names of Section 4's statements as a type: ``Statement``.

Every ``Bound`` record carries one, ``measure`` keys its results by them, and ``Analysis.entry``
looks them up; a member's value is the paper's display name (``Statement.LEMMA_4_19.value ==
"Lemma 4.19"``), which is what tables print and JSON files use as keys, so a reader goes from a
number to the page.  A ``str`` enum: it compares, hashes and serialises as its display name.

>>> from boundlab.bounds import Statement
>>> Statement.THEOREM_4_30.value, Statement("Lemma 4.17 (absolute)").name
('Theorem 4.30', 'LEMMA_4_17_ABSOLUTE')
"""

from __future__ import annotations

import enum


class Statement(str, enum.Enum):
    """A Section 4 statement of the paper (and boundlab's named variants of a few of them)."""

    LEMMA_4_3 = "Lemma 4.3"
    LEMMA_4_6 = "Lemma 4.6"
    COROLLARY_4_9 = "Corollary 4.9"
    LEMMA_4_10 = "Lemma 4.10"
    LEMMA_4_11 = "Lemma 4.11"
    COROLLARY_4_12 = "Corollary 4.12"
    REMARK_4_13 = "Remark 4.13"
    LEMMA_4_14 = "Lemma 4.14"
    COROLLARY_4_16 = "Corollary 4.16"
    LEMMA_4_17 = "Lemma 4.17"
    LEMMA_4_17_ABSOLUTE = "Lemma 4.17 (absolute)"  # the sigma_min-free score bound (errata)
    REMARK_4_18 = "Remark 4.18"
    LEMMA_4_19 = "Lemma 4.19"
    COROLLARY_4_20 = "Corollary 4.20"
    LEMMA_4_21 = "Lemma 4.21"
    LEMMA_4_21_ABSOLUTE_SCORES = "Lemma 4.21 (absolute scores)"
    REMARK_4_22 = "Remark 4.22"
    COROLLARY_4_23 = "Corollary 4.23"
    LEMMA_4_25 = "Lemma 4.25"
    LEMMA_4_26 = "Lemma 4.26"
    LEMMA_4_27 = "Lemma 4.27"
    LEMMA_4_28 = "Lemma 4.28"
    LEMMA_4_29 = "Lemma 4.29"
    LEMMA_4_29_PROPAGATED = "Lemma 4.29 (propagated)"  # with the emulated network's own input errors
    THEOREM_4_30 = "Theorem 4.30"
    THEOREM_4_30_SIGMA_MIN_FREE = "Theorem 4.30 (sigma_min-free)"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"{value!r} is not a Section 4 statement boundlab evaluates; the names are "
                         f"{', '.join(repr(s.value) for s in cls)}")

    @property
    def number(self) -> tuple[int, int]:
        """(section, number): the order of the paper."""
        major, minor = self.value.split()[1].split(".")
        return int(major), int(minor)
