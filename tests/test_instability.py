"""boundlab.experiments.instability: runs that become unstable, recorded and not crashing."""

import dataclasses

import numpy as np
import pytest

from boundlab.experiments import instability

TINY = dataclasses.replace(instability.QUICK_INSTABILITY, learning_rates=(1e-1,), seeds=(1,), steps=14, warmup=4)


@pytest.mark.fast_compile  # a run that diverges and goes on: no bits compared: tests/conftest.py
def test_a_nonfinite_loss_is_recorded_skipped_and_the_run_goes_on_when_so_configured():
    # (stopping at the onset: the quick study's test, tests/test_training_step.py)
    going = instability._train(TINY, TINY.recipe, False, 1e-1, 1, TINY.steps, instability._data(TINY), stop=False)
    assert len(going) == TINY.steps
    bad = [r["step"] for r in going if not r["finite"]]
    # a step is not finite by its loss or by its fp16 gradients (on this model the backward pass
    # overflows first: the recorded loss, and the float64 gradient norm, can stay finite)
    assert bad and bad[0] < TINY.steps - 1
    assert all(np.isfinite(going[b]["loss"]) for b in range(bad[0]))
    assert all(np.isfinite(r["kappa_softmax"]) for r in going)  # the skipped steps never reached the weights


def test_the_study_refuses_bad_settings_in_one_line():
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        dataclasses.replace(TINY, on_nonfinite="crash")
    with pytest.raises(ValueError, match="unknown recipe"):
        dataclasses.replace(TINY, recipe="fp12")
    with pytest.raises(ValueError, match="warmup < steps"):
        dataclasses.replace(TINY, warmup=14)
