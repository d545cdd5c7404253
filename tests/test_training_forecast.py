"""boundlab.training.forecast: instability events, forecast scores, Precision@K, paired intervals."""

import math

import numpy as np
import pytest

from boundlab.training import forecast


def test_events_are_nonfinite_losses_and_spikes_over_the_recent_median():
    losses = [4.0, 3.8, 3.6, 3.5, 3.4, 5.5, 3.3, math.nan, 3.2]
    events = forecast.instability_events(losses, spike=1.5, window=3)
    # 5.5 > 1.5 * median(3.6, 3.5, 3.4) = 5.25; 3.3 < 1.5 * median(3.5, 3.4, 5.5); NaN is an event
    assert events.tolist() == [False, False, False, False, False, True, False, True, False]
    assert forecast.onset(events) == 5 and forecast.onset([False, False]) is None
    assert not forecast.instability_events(np.linspace(4, 1, 50)).any()  # a loss that falls is never an event
    with pytest.raises(ValueError, match="spike must be > 1"):
        forecast.instability_events(losses, spike=1.0)


def test_scores_are_the_running_maximum_relative_to_the_warmup_median():
    signal = np.array([1.0, 3.0, 2.0, math.nan, 1.0, 8.0, 2.0])
    np.testing.assert_array_equal(forecast.running_max(signal, 2), [1, 3, 3, 2, 1, 8, 8])
    # warm-up median of (1, 3, 2) is 2
    np.testing.assert_array_equal(forecast.forecast_scores(signal, 3, 3), np.array([1, 3, 3, 3, 2, 8, 8]) / 2)
    assert np.isnan(forecast.forecast_scores([0.0, 0.0, 1.0], 1, 2)).all()  # no scale to compare with


def test_labels_and_precision_at_k_on_a_hand_counted_example():
    evaluated, positive = forecast.labels(10, onset_step=7, horizon=3, warmup=2)
    assert np.flatnonzero(evaluated).tolist() == [2, 3, 4, 5, 6]  # after the warm-up, before the onset
    assert np.flatnonzero(positive).tolist() == [4, 5, 6]  # the onset within 3 steps
    evaluated, positive = forecast.labels(10, None, 3, 2)
    assert evaluated.sum() == 8 and not positive.any()
    result = forecast.precision_at_k([0.1, 0.9, 0.8, 0.2, math.nan], [False, True, False, True, True])
    # K = 3 positives; the top three scores are steps 1 (positive), 2 (not) and 3 (positive)
    assert result == {"precision": 2 / 3, "k": 3, "positives": 3, "steps": 5, "base_rate": 3 / 5}
    assert forecast.precision_at_k([0.1, 0.9], [True, False], k=1)["precision"] == 0.0
    assert math.isnan(forecast.precision_at_k([1.0], [False])["precision"])  # K = 0: nothing to rank


def test_the_paired_interval_is_scipys_paired_t_interval():
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 0.1, 6), rng.normal(0.9, 0.1, 6)
    result = forecast.paired_difference(a, b)
    interval = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert result["pairs"] == 6 and result["mean"] == pytest.approx(np.mean(a - b), rel=1e-12)
    assert (result["low"], result["high"]) == pytest.approx((interval.low, interval.high), rel=1e-10)
    assert math.isnan(forecast.paired_difference([1.0, math.nan], [0.5, 1.0])["low"])  # one pair left
