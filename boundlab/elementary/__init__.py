"""Correctly rounded elementary functions for the emulation: exp (``exp``), every other
elementwise function ``emulate`` accepts (``functions.rounded``, by primitive), and the double-word
arithmetic and boundary test they share."""

from boundlab.elementary.boundary import MARGIN_ULPS
from boundlab.elementary.double_word import double_word_exp, sticky
from boundlab.elementary.exponential import exp
from boundlab.elementary.functions import RULES, rounded, single_primitive

__all__ = ["MARGIN_ULPS", "RULES", "double_word_exp", "exp", "rounded", "single_primitive", "sticky"]
