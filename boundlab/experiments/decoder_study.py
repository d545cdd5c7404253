"""The decoder study (``boundlab model smollm2``): SmolLM2-135M in the arithmetics users run, and the
errors they feel, against the exact (float64) model.

Arithmetics (``ARITHMETICS``):

* ``"bf16"``, ``"fp16"``: every operation rounded into the format (Model 4.1), dot products and
  sums accumulated in it (``Emulated(fmt)``);
* ``"bf16-fp32acc"``, ``"fp16-fp32acc"``: the same with a float32 accumulator;
* ``"autocast-bf16"``: PyTorch autocast's split, the GEMMs on an Ampere tensor core
  (``ampere-mma-bf16-fp32``: bf16 operands, float32 accumulation, the result rounded to bf16) and
  every other operation (norms, softmax, SiLU, residual additions, RoPE) in float32;
* ``"fp8-tensor"``, ``"fp8-tensor-promoted"``, ``"fp8-block"``: the same split with the GEMMs on
  Hopper's FP8 tensor core (``hopper-wgmma-fp8_e4m3-fp32``: e4m3 operands, the unit's
  fixed-point-aligned accumulation, results rounded to bf16): one scale per operand tensor; the
  same with a float32 total every 128 products (promotion); DeepSeek-V3's 1 x 128 block scales
  with promotion every 128 (``boundlab.matrix_units``).

On the shipped text (``boundlab.models.sentences()``, joined; the first ``text_tokens`` tokens):
per arithmetic ``analysis.language.next_token_errors`` (logits' normwise relative error, KL
divergence of the next-token distribution, top-1 agreement, perplexity against float64's) and the
per-layer error growth ||X_l_hat - X_l||_F / ||X_l||_F of the hidden states.  On the prompts
(``PROMPTS``, one padded batch: ``decoder.generate_batch``): greedy generation of ``steps`` tokens
in each arithmetic against the exact one, and the first step at which the tokens differ
(``analysis.language.first_divergence``).

The outlier regimes on the exact model (``analysis.outliers``, for ``OUTLIER_FORMATS``): massive
activations per layer, the attention on the first token per layer and head, and the RMS norm's and
the max-shifted softmax's measured error against their bounds (Lemma 4.6; Lemma 4.19 with
Corollary 4.20's term for the shift) on the massive-activation tokens and the sink columns
(P[0, t] > ``SINK``) against the others, within the lemmas' assumptions and outside them.

The arithmetics run the plain program (``Native()``) under ``boundlab.emulation.mixed`` for
autocast, and the family's own ``arithmetic=`` (bit for bit ``emulate`` of the plain program)
otherwise.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.analysis import outliers
from boundlab.analysis.language import first_divergence, next_token_errors
from boundlab.arithmetic import Emulated, Exact, Native
from boundlab.emulation import Choice, mixed
from boundlab.errors import relative_normwise
from boundlab.experiments.real_model import truncated
from boundlab.formats import get_format
from boundlab.matrix_units import get_unit
from boundlab.models import decoder as dec
from boundlab.models.decoder.network import causal_positions_mask
from boundlab.models import load, sentences, smollm2
from boundlab.output.pyplot import pyplot
from boundlab.output.strict_json import write_json
from boundlab.output.tables import write_rows

ARITHMETICS = ("bf16", "fp16", "bf16-fp32acc", "fp16-fp32acc", "autocast-bf16", "fp8-tensor", "fp8-tensor-promoted",
               "fp8-block")
FP8_UNIT = "hopper-wgmma-fp8_e4m3-fp32"
FP8_RECIPES = {"fp8-tensor": dict(scaling="tensor"),  # one scale per operand, the unit's own accumulation over K
               "fp8-tensor-promoted": dict(scaling="tensor", promote_every=128),  # + a float32 total every 128
               "fp8-block": dict(scaling="block")}  # DeepSeek-V3: 1 x 128 block scales, promotion every 128
PROMPTS = ("The capital of France is", "The largest planet in the solar system is",
           "Water boils at a temperature of", "def fibonacci(n):", "In 1905, Albert Einstein",
           "The three primary colors are")


@dataclasses.dataclass(frozen=True)
class DecoderStudy:
    """What the decoder study runs: the model, the arithmetics (``ARITHMETICS``), the prompts and
    the tokens generated after each, how many tokens of the shipped text, and optionally only the
    model's first ``layers`` layers."""

    model: str = "smollm2"
    arithmetics: tuple = ("bf16", "fp16", "autocast-bf16")
    prompts: tuple = PROMPTS
    steps: int = 16
    text_tokens: int = 256
    layers: int | None = None

    def __post_init__(self):
        for name in self.arithmetics:
            if name not in ARITHMETICS:
                raise ValueError(f"unknown arithmetic {name!r}; the decoder study runs {', '.join(ARITHMETICS)}")
        if not self.prompts or self.steps < 1 or self.text_tokens < 2:
            raise ValueError("the decoder study needs a prompt, steps >= 1 and text_tokens >= 2")
        for prompt in self.prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"every prompt must be non-empty text, got {prompt!r}")


OUTLIER_FORMATS = ("bf16", "fp16")
SINK = 0.9  # a column is a sink column when its query puts more than this on the first key

QUICK = dict(arithmetics=("bf16", "autocast-bf16"), prompts=PROMPTS[:2], steps=4, text_tokens=24, layers=4)


def low_policy(name: str) -> Emulated:
    """The rounding policy of an arithmetic (its GEMMs' policy for autocast)."""
    if name == "autocast-bf16":
        return Emulated("bf16", accumulation=get_unit("ampere-mma-bf16-fp32"), unroll=0)
    if name in FP8_RECIPES:
        return Emulated("bf16", accumulation=get_unit(FP8_UNIT, **FP8_RECIPES[name]), unroll=0)
    fmt, _, accumulator = name.partition("-")
    return Emulated(fmt, accumulator="fp32" if accumulator else None, unroll=0)


def computed(name: str, f):
    """``f(arithmetic)(params, ids)`` in the arithmetic ``name``: for autocast and FP8, ``f(Native())``
    (the plain program) with every site but the GEMMs in float32 (``boundlab.emulation.mixed``);
    for the others ``f(policy)``, the family's own arithmetic (bit for bit ``emulate`` of the plain
    program, tests/test_decoder.py, and three times faster to compile)."""
    if name == "autocast-bf16" or name in FP8_RECIPES:
        return mixed(f(Native()), low_policy(name), Emulated("fp32", unroll=0),
                     Choice(primitives=frozenset({"dot_general"}), invert=True))
    return jax.jit(f(low_policy(name)))


def text_ids(model, tokens: int) -> np.ndarray:
    """The first ``tokens`` tokens of the shipped sentences, joined into one text."""
    model.check_length(tokens, "text_tokens")
    ids = smollm2.encode(model, " ".join(sentences()))
    if len(ids) < tokens:
        raise ValueError(f"the shipped text has {len(ids)} tokens, fewer than text_tokens = {tokens}")
    return ids[:tokens]


def run(study: DecoderStudy, progress: bool = True, model=None) -> dict:
    """Every arithmetic on the text and the prompts (module docstring); a dict of plain numbers.
    ``model``: a loaded model (``boundlab.models.load(study.model)`` when None; the tests pass a
    small random one with SmolLM2's tokenizer)."""
    model = load(study.model) if model is None else model
    config, params = truncated(model, study.layers)
    params = jax.tree.map(jnp.asarray, params)
    ids = jnp.asarray(text_ids(model, study.text_tokens))

    def say(text):
        if progress:
            print(f"decoder study: {text}", flush=True)

    def forward(arithmetic):
        return lambda p, i: dec.forward(p, i, config, arithmetic, return_layers=True)

    def generate(arithmetic):
        return lambda p, q, n: dec.generate_batch(p, q, n, study.steps, config, arithmetic)

    exact_logits, exact_states = jax.jit(lambda p, i: dec.forward(p, i, config, Exact(), return_layers=True))(params, ids)
    prompts, lengths = dec.pad_prompts([smollm2.encode(model, prompt) for prompt in study.prompts])
    model.check_length(int(jnp.max(lengths)) + study.steps, f"the longest prompt with {study.steps} generated tokens")
    exact_tokens = jax.jit(generate(Exact()))(params, prompts, lengths)
    result = {"model": study.model, "layers": config.layers, "text_tokens": int(ids.shape[0]), "steps": study.steps,
              "exact": {"perplexity": float(jnp.exp(dec.next_token_loss(exact_logits, ids))),
                        "continuations": {p: smollm2.decode(model, t) for p, t in zip(study.prompts, exact_tokens)}},
              "arithmetics": {}}
    say("outliers: massive activations, attention sinks, the RMS norm and the softmax")
    result["outliers"] = outlier_regimes(params, exact_states, config)
    for name in study.arithmetics:
        say(f"{name}: the text")
        low = low_policy(name)
        rounded = dec.cast_params(params, low)  # the weights as the arithmetic stores them
        logits, states = computed(name, forward)(rounded, ids)
        errors = next_token_errors(logits, exact_logits, ids)
        layer_errors = relative_normwise(states.astype(jnp.float64), exact_states, axis=(1, 2))
        say(f"{name}: generation")
        generations = computed(name, generate)(rounded, prompts, lengths)
        divergence = [int(d) for d in jax.vmap(first_divergence)(generations, exact_tokens)]
        result["arithmetics"][name] = {
            "text": errors.summary(), "layer_errors": [float(e) for e in layer_errors],
            "first_divergence": divergence,
            "generations_equal": sum(d == study.steps for d in divergence),
            "continuations": {p: smollm2.decode(model, g) for p, g in zip(study.prompts, generations)}}
    return result


def _within(error, bound, assumed, selected) -> dict:
    """Counts, the largest error and the largest error / bound of the selected columns, within the
    lemma's assumptions (``assumed``) and outside them."""
    inside, outside = selected & assumed, selected & ~assumed
    ratio = jnp.where(inside, error / bound, 0)
    return {"columns": int(jnp.sum(selected)), "outside_assumptions": int(jnp.sum(outside)),
            "max_error": float(jnp.max(jnp.where(inside, error, 0))), "max_error_over_bound": float(jnp.max(ratio)),
            "max_error_outside": float(jnp.max(jnp.where(outside, error, 0)))}


def outlier_regimes(params, states, config) -> dict:
    """The outlier measurements on the exact hidden states (module docstring): plain numbers."""
    n = states.shape[-1]
    S, P = jax.jit(lambda p, s: dec.attention_maps(p, s, config))(params, states)
    massive = outliers.massive_activations(states)
    sinks = outliers.sink_mass(P)
    mask = causal_positions_mask(jnp.arange(n), jnp.arange(n))
    sink_columns = (P[..., 0, :] > SINK) & (jnp.arange(n) > 0)
    result = {"massive": {k: [float(v) for v in massive[k]] for k in ("max_abs", "rms", "max_ratio")},
              "sink_mass": [[float(v) for v in row] for row in sinks], "sink_threshold": SINK,
              "sink_columns": int(jnp.sum(sink_columns)), "columns": int(sink_columns.size - P.shape[0] * P.shape[1]),
              "rms_norm": {}, "softmax": {}}
    result["massive"]["massive_tokens"] = [int(v) for v in massive["massive_tokens"]]
    tokens = massive["massive"][:-1]  # the norms' inputs: layers 0 ... L - 1
    for fmt in OUTLIER_FORMATS:
        norm = jax.vmap(lambda X, f=fmt: outliers.rms_norm_errors(X, f, config.eps))(states[:-1])
        assumed = norm["in_range"] & norm["normal"]
        result["rms_norm"][fmt] = {
            "bound": float(norm["bound"][0]),
            "kappa_cc_max": float(jnp.max(jnp.where(jnp.isfinite(norm["kappa_cc"]), norm["kappa_cc"], 0))),
            "non_generic_tokens": int(jnp.sum(~jnp.isfinite(norm["kappa_cc"]))),  # an exact zero entry: kappa_cc = inf
            "overflow": int(jnp.sum(~norm["in_range"])),
            "massive": _within(norm["error"], norm["bound"][:, None], assumed, tokens),
            "others": _within(norm["error"], norm["bound"][:, None], assumed, ~tokens)}
        soft = jax.vmap(jax.vmap(lambda s, f=fmt: outliers.softmax_errors(s, mask, f)))(S)
        alone = (jnp.sum(mask, axis=0).astype(jnp.float64) + 3) * get_format(fmt).unit_roundoff  # Lemma 4.19 without the shift
        keep = jnp.arange(n) > 0
        result["softmax"][fmt] = {
            "sink": _within(soft["error"], soft["bound"], soft["normal"], sink_columns),
            "others": _within(soft["error"], soft["bound"], soft["normal"], ~sink_columns & keep),
            "lemma_4_19_alone_max_error_over_bound": float(jnp.max(jnp.where(soft["normal"] & keep, soft["error"] / alone, 0)))}
    return result


def write(result: dict, out: str) -> dict:
    """summary.json, layers.csv (per-layer error growth), generation.csv and layers.png in ``out``."""
    import os

    os.makedirs(out, exist_ok=True)
    names = list(result["arithmetics"])
    layers = [{"layer": index, **{name: result["arithmetics"][name]["layer_errors"][index] for name in names}}
              for index in range(result["layers"] + 1)]
    write_rows(os.path.join(out, "layers.csv"), layers)
    rows = [{"arithmetic": name, "prompt": prompt, "first_divergence": step,
             "continuation": result["arithmetics"][name]["continuations"][prompt],
             "exact": result["exact"]["continuations"][prompt]}
            for name in names for prompt, step in zip(result["exact"]["continuations"],
                                                      result["arithmetics"][name]["first_divergence"])]
    write_rows(os.path.join(out, "generation.csv"), rows)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for name in names:
        values = np.asarray(result["arithmetics"][name]["layer_errors"], np.float64)
        axis.semilogy(np.arange(values.size), np.where(values > 0, values, np.nan), marker="o", label=name)
    axis.set_xlabel("layer (0: the embedding)")
    axis.set_ylabel("||X_hat - X||_F / ||X||_F")
    axis.set_title(f"{result['model']}: hidden-state error per layer ({result['text_tokens']} tokens)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "layers.png"), dpi=120)
    plt.close(figure)
    _plot_outliers(plt, result, os.path.join(out, "outliers.png"))
    _plot_divergence(plt, result, os.path.join(out, "divergence.png"))
    regimes = result["outliers"]
    write_rows(os.path.join(out, "outliers.csv"), [
        {"layer": index, **{key: regimes["massive"][key][index] for key in regimes["massive"]},
         "sink_mass_max": max(regimes["sink_mass"][index - 1]) if index else None}
        for index in range(result["layers"] + 1)])
    write_json(os.path.join(out, "summary.json"), result)
    return {name: result["arithmetics"][name]["text"] for name in names}


def _plot_outliers(plt, result, path):
    regimes = result["outliers"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    layers = np.arange(result["layers"] + 1)
    left.semilogy(layers, regimes["massive"]["max_abs"], marker="o", label="max |x|")
    left.semilogy(layers, regimes["massive"]["rms"], marker="s", label="rms of the stream")
    left.set_xlabel("layer (0: the embedding)")
    left.set_title("massive activations in the residual stream")
    twin = left.twinx()
    twin.bar(layers, regimes["massive"]["massive_tokens"], alpha=0.25, color="gray")
    twin.set_ylabel("tokens with one dominant entry")
    left.legend(loc="upper left")
    mass = np.asarray(regimes["sink_mass"], np.float64).T  # (heads, layers)
    image = right.imshow(mass, aspect="auto", vmin=0, vmax=1, cmap="viridis",
                         extent=(0.5, mass.shape[1] + 0.5, mass.shape[0] - 0.5, -0.5))
    right.set_xlabel("layer")
    right.set_ylabel("head")
    right.set_title("attention on the first token (mean over queries)")
    figure.colorbar(image, ax=right)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_divergence(plt, result, path):
    figure, axis = plt.subplots(figsize=(6, 3.5))
    names = list(result["arithmetics"])
    for index, name in enumerate(names):
        steps = np.asarray(result["arithmetics"][name]["first_divergence"], np.float64)
        jitter = np.linspace(-0.15, 0.15, steps.size) if steps.size > 1 else np.zeros(1)
        axis.scatter(index + jitter, steps, alpha=0.7)
    axis.axhline(result["steps"], color="gray", linestyle=":", label=f"never ({result['steps']} steps)")
    axis.set_xticks(range(len(names)), names, rotation=15)
    axis.set_ylabel("first generated token that differs")
    axis.set_title("greedy generation against float64, per prompt")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
