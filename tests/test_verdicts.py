"""boundlab.verdicts: a bound check is held, failed or not checked (with the reason), never True
against a NaN or an overflowed measurement."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from boundlab.verdicts import combine, holds, verdict

NAN, INF = float("nan"), float("inf")


def test_held_and_failed_count_only_the_checked_entries():
    result = verdict([1.0, 2.0, 3.0], [1.0, 2.5, 2.9])
    assert result["verdict"] == "failed" and holds(result) is False
    assert (result["checked"], result["held"], result["failed"]) == (3, 2, 1)
    assert result["label"] == "failed (1 of 3 checked)"
    result = verdict([[1.0, 2.0], [0.0, 3.0]], 3.0)  # a bound broadcast over layers and tokens
    assert result["label"] == "held" and holds(result) is True and result["entries"] == 4


def test_nan_and_overflow_are_no_verdict():
    # the hostile case: analyze compared a NaN measurement and reported "holds": true
    result = verdict([NAN], [1.0], overflow=[True])
    assert result["verdict"] == "not checked" and holds(result) is None
    assert result["label"] == "not checked (overflow)"
    assert verdict([NAN], [1.0])["label"] == "not checked (non-finite measurement)"
    assert verdict([INF], [1.0])["label"] == "not checked (non-finite measurement)"
    result = verdict([NAN, 0.5], [1.0, 1.0], overflow=[True, False])
    assert result["label"] == "held (1 of 2 checked; not checked: overflow on 1)"


def test_failed_hypotheses_are_named_and_outrank_a_non_finite_measurement():
    result = verdict([5.0, INF, 0.1], [1.0, 1.0, 1.0], {"d >= 2": [True, True, True], "generic": [False, False, True]})
    # the violated entry has a failed hypothesis: not a failure of the bound
    assert result["label"] == "held (1 of 3 checked; not checked: hypotheses failed (generic) on 2)"
    result = verdict([0.1], [1.0], {"n u < 1": False, "generic": True})
    assert result["label"] == "not checked (hypotheses failed (n u < 1))"
    assert verdict([0.1], [INF])["label"] == "not checked (bound not finite)"
    assert verdict([0.1], [NAN])["label"] == "not checked (bound not finite)"
    assert verdict(np.zeros(0), np.zeros(0))["label"] == "not checked (nothing to check)"


def test_combine_fails_if_any_failed_and_holds_if_any_held():
    held, failed, unchecked = verdict([1.0], [2.0]), verdict([3.0], [2.0]), verdict([NAN], [2.0], overflow=True)
    assert combine([held, unchecked])["label"] == "held (1 of 2 checked; not checked: overflow on 1)"
    assert combine([held, failed, unchecked])["verdict"] == "failed"
    assert combine([unchecked, unchecked])["label"] == "not checked (overflow)"


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.0, NAN, INF]), st.sampled_from([0.0, 1.0, 1.5, NAN, INF]),
                          st.booleans(), st.booleans()), min_size=1, max_size=8))
def test_the_counts_add_up_and_true_needs_a_finite_comparison(rows):
    measured, bound, hypothesis, overflow = (np.array(column) for column in zip(*rows))
    result = verdict(measured, bound, {"h": hypothesis}, overflow=overflow)
    assert result["checked"] + sum(result["not_checked"].values()) == result["entries"] == len(rows)
    assert result["held"] + result["failed"] == result["checked"]
    comparable = ~overflow & hypothesis & np.isfinite(measured) & np.isfinite(bound)
    assert result["checked"] == comparable.sum()
    if holds(result) is True:
        assert np.all(measured[comparable] <= bound[comparable]) and comparable.any()
    if holds(result) is False:
        assert np.any(measured[comparable] > bound[comparable])
    if holds(result) is None:
        assert not comparable.any() and result["label"].startswith("not checked (")
