"""boundlab.analysis.outliers on constructed regimes: one dominant entry per token (massive
activations), a dominant score (an attention sink) whose max-shift error Lemma 4.19 alone does
not cover, and fp16's sum of squares overflowing on a large entry."""

import jax
import jax.numpy as jnp
import numpy as np

from boundlab import get_format
from boundlab.analysis import outliers
from boundlab.models.decoder.network import causal_positions_mask


def test_one_dominant_entry_is_a_massive_activation():
    states = 1 + 0.1 * jax.random.normal(jax.random.key(0), (2, 16, 5), jnp.float64)
    states = states.at[1, 3, 2].set(60.0)  # token 2 of layer 1
    found = outliers.massive_activations(states)
    assert found["massive"].tolist() == [[False] * 5, [False, False, True, False, False]]
    assert found["massive_tokens"].tolist() == [0, 1]
    assert float(found["max_abs"][1]) == 60.0
    assert 1 <= float(found["max_ratio"][1]) <= 4  # at most sqrt(d) = 4
    P = jnp.zeros((1, 4, 4)).at[0, 0, :].set(1.0)
    assert float(outliers.sink_mass(P)[0]) == 1.0


def test_a_sink_score_makes_the_shift_matter_and_the_whole_bound_holds():
    # scores of 8 keys for 8 queries, key 0 far above the others: after the shift s_i - m the
    # small scores lose bits in bf16 (spacing 0.25 near 40), an error Lemma 4.19's (n + 3) u,
    # written for the unshifted softmax, does not see; the shift's term 2 (max s - min s) u does
    n = 8
    S = jax.random.normal(jax.random.key(1), (n, n), jnp.float64).at[0].add(40.0)
    mask = causal_positions_mask(jnp.arange(n), jnp.arange(n))
    u = get_format("bf16").unit_roundoff
    found = outliers.softmax_errors(S, mask, "bf16")
    alone = (jnp.sum(mask, axis=0).astype(jnp.float64) + 3) * u
    assert bool(jnp.all(found["normal"][1:] | ~jnp.any(mask[:, 1:], axis=0)))
    assert float(jnp.max(found["error"][1:] / alone[1:])) > 1  # Lemma 4.19 alone is exceeded
    assert bool(jnp.all(found["error"] <= found["bound"]))      # the shifted softmax's bound is not
    assert float(found["error"][0]) == 0  # one visible key: probability 1 exactly


def test_rms_norm_errors_within_their_bound_and_fp16_overflow_flagged():
    x = jax.random.normal(jax.random.key(2), (64, 6), jnp.float64)
    x = x.at[5, 3].set(300.0)  # 300^2 = 9e4 > fp16's 65504
    for fmt in ("bf16", "fp16"):
        found = outliers.rms_norm_errors(x, fmt, 1e-5)
        assumed = found["in_range"] & found["normal"]
        assert bool(jnp.all(jnp.where(assumed, found["error"] <= found["bound"], True)))
        assert float(found["bound"]) == (64 / 2 + 3.5) * get_format(fmt).unit_roundoff
        assert bool(jnp.all(found["kappa_cc"] <= 2))
    assert outliers.rms_norm_errors(x, "bf16", 1e-5)["in_range"].tolist() == [True] * 6
    fp16 = outliers.rms_norm_errors(x, "fp16", 1e-5)
    assert fp16["in_range"].tolist() == [True, True, True, False, True, True]
    assert float(fp16["error"][3]) > float(fp16["bound"])  # what the flag warns of: the bound does not apply
    np.testing.assert_array_equal(np.asarray(fp16["finite"]), True)
