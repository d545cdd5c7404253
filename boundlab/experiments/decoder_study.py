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

The mixed-precision advisor (``run_advisor``): ``first_order`` of the bf16 forward ranks every
operation of every layer; keeping the top-ranked fraction in float32 is measured against keeping
a random fraction of the same size, and the bound's shares per part and per layer are reported.

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
from boundlab.emulation.mixed_precision import exact_at_rounded_inputs, mixed_by_mask
from boundlab.experiments import advisor
from boundlab.sensitivity import first_order
from boundlab.analysis.language import first_divergence, next_token_errors
from boundlab.arithmetic import Emulated, Exact, Native
from boundlab.emulation import Choice, mixed
from boundlab.errors import relative_normwise
from boundlab.experiments.real_model import truncate, truncated
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

FRACTIONS = (0.01, 0.05, 0.2)
ADVISOR_STRATEGIES = ("first-order", "first-order/cost", "random")


@dataclasses.dataclass(frozen=True)
class DecoderStudy:
    """What the decoder study runs: the model, the arithmetics (``ARITHMETICS``), the prompts and
    the tokens generated after each, how many tokens of the shipped text, optionally only the
    model's first ``layers`` layers; the advisor's tokens (``bound_tokens``, the text's first),
    recomputed ``fractions`` and layers (``advisor_layers``: its first layers, default all)."""

    model: str = "smollm2"
    arithmetics: tuple = ("bf16", "fp16", "autocast-bf16")
    prompts: tuple = PROMPTS
    steps: int = 16
    text_tokens: int = 256
    layers: int | None = None
    bound_tokens: int = 16
    fractions: tuple = FRACTIONS
    advisor_layers: int | None = None
    seed: int = 0

    def __post_init__(self):
        for name in self.arithmetics:
            if name not in ARITHMETICS:
                raise ValueError(f"unknown arithmetic {name!r}; the decoder study runs {', '.join(ARITHMETICS)}")
        if self.advisor_layers is not None and (self.advisor_layers < 1 or
                                                (self.layers is not None and self.advisor_layers > self.layers)):
            raise ValueError(f"advisor_layers must be in 1 ... layers, got {self.advisor_layers}")
        if not 2 <= self.bound_tokens <= self.text_tokens:
            raise ValueError(f"bound_tokens must be in 2 ... text_tokens = {self.text_tokens}, got {self.bound_tokens}")
        if not self.fractions or not all(0 < f < 1 for f in self.fractions):
            raise ValueError(f"fractions must lie in (0, 1), got {self.fractions}")
        if not self.prompts or self.steps < 1 or self.text_tokens < 2:
            raise ValueError("the decoder study needs a prompt, steps >= 1 and text_tokens >= 2")
        for prompt in self.prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"every prompt must be non-empty text, got {prompt!r}")


OUTLIER_FORMATS = ("bf16", "fp16")
SINK = 0.9  # a column is a sink column when its query puts more than this on the first key

QUICK = dict(arithmetics=("bf16", "autocast-bf16"), prompts=PROMPTS[:2], steps=4, text_tokens=24, layers=4,
             bound_tokens=8, fractions=(0.2,), advisor_layers=2)


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
    say(f"first-order ranking and the mixed-precision advisor (bf16, {study.bound_tokens} tokens, layers unrolled)")
    advised_config, advised = truncate(config, params, study.advisor_layers)
    result["advisor"] = run_advisor(advised, ids[:study.bound_tokens], advised_config, study.fractions, study.seed)
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


def top1_outputs(exact_logits):
    """The outputs functional ``first_order`` bounds on a decoder: each position's logit of the
    exact model's top-1 token (n entries instead of V x n)."""
    top = jnp.argmax(exact_logits, axis=0)
    return lambda logits: jnp.take_along_axis(logits, top[None], axis=0)[0]


def run_advisor(params, ids, config, fractions, seed: int = 0) -> dict:
    """Which operations to keep in float32 (LAMP's question): ``first_order`` of the bf16 forward
    (every operation rounded, layers unrolled so that each layer's operations are sites of their
    own, dot products lumped by Lemma 4.3's constant) with each position's exact top-1 logit as
    the outputs ranks the sites; the shortest prefix of a ranking holding a fraction of the
    rounded operations runs in float32 (``mixed_by_mask``), the rest in bf16, and the logits'
    normwise error against the exact forward at the bf16 weights is measured per fraction, for the
    rankings ``ADVISOR_STRATEGIES`` (``boundlab.experiments.advisor``).  Also the bound's share per
    part and per layer."""
    low, high = Emulated("bf16", unroll=0), Emulated("fp32", unroll=0)

    def plain(p, i):
        return dec.forward(p, i, config, Native(), unroll_layers=True)

    record = first_order(plain, low, lumped=True, chunk=64,
                         outputs=top1_outputs(dec.forward(params, ids, config)))(params, ids)
    sites = record.sites
    costs = np.array([site.operations for site in sites], np.float64)
    contributions = np.asarray(record.site_totals(), np.float64)
    evaluate = mixed_by_mask(plain, low, high, inputs="low")
    reference = np.asarray(exact_at_rounded_inputs(plain, low)(params, ids), np.float64)

    def error(mask):
        out = np.asarray(evaluate(mask, params, ids), np.float64)
        return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))

    swept = advisor.sweep(error, contributions, costs, fractions, ADVISOR_STRATEGIES, seed=seed)
    ranked = ("first-order", "first-order/cost")
    parts, layers = {}, {}  # layers[0]: the sites outside the layers (the final norm, the logits)
    for site, total in zip(sites, contributions):
        scope = site.scope.split("/")
        layer = next((int(s.removeprefix("layer")) for s in scope if s.startswith("layer") and s[5:].isdigit()), 0)
        part = next((s for s in scope if s in ("attention", "feed_forward", "norm1", "norm2", "residual",
                                               "final_norm", "logits")), "other")
        parts[part] = parts.get(part, 0.0) + float(total)
        layers[layer] = layers.get(layer, 0.0) + float(total)
    total = float(contributions.sum())
    order = advisor.order("first-order", contributions, None)
    return {"format": "bf16", "high": "fp32", "tokens": int(ids.shape[0]), "sites": len(sites),
            "bound_max": float(jnp.max(record.bound)), "probabilistic_max": float(jnp.max(record.probabilistic)),
            **swept, "fraction_for_10x": advisor.reduction(swept, ranked, 10),
            "fraction_for_100x": advisor.reduction(swept, ranked, 100),
            "random_fraction_for_10x": advisor.reduction(swept, ("random",), 10),
            "parts": {k: v / total for k, v in sorted(parts.items(), key=lambda item: -item[1])},
            "layers": [layers.get(index, 0.0) / total for index in range(config.layers + 1)],
            "top_sites": [{"site": sites[i].label(), "share": float(contributions[i] / total),
                           "operations_fraction": float(costs[i] / costs.sum())} for i in order[:10]]}


def outlier_regimes(params, states, config) -> dict:
    """The outlier measurements on the exact hidden states (module docstring): plain numbers."""
    n = states.shape[-1]
    S, P = jax.jit(lambda p, s: dec.attention_maps(p, s, config))(params, states)
    massive = outliers.massive_activations(states)
    sinks = outliers.sink_mass(P)
    mask = causal_positions_mask(jnp.arange(n), jnp.arange(n))
    keep = jnp.arange(n) > 0  # query 0 sees only the first key: it is no sink, and its softmax is exact
    sink_columns = (P[..., 0, :] > SINK) & keep
    result = {"massive": {k: [float(v) for v in massive[k]] for k in ("max_abs", "rms", "max_ratio")},
              "sink_mass": [[float(v) for v in row] for row in sinks], "sink_threshold": SINK,
              "sink_columns": int(jnp.sum(sink_columns)), "columns": int(jnp.sum(keep)) * P.shape[0] * P.shape[1],
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
        alone = soft["lemma_4_19"]  # the unshifted softmax's bound, without the shift's term
        result["softmax"][fmt] = {
            "sink": _within(soft["error"], soft["bound"], soft["normal"], sink_columns),
            "others": _within(soft["error"], soft["bound"], soft["normal"], ~sink_columns & keep),
            "lemma_4_19_alone_max_error_over_bound": float(jnp.max(jnp.where(soft["normal"] & keep, soft["error"] / alone, 0)))}
    return result


def write(result: dict, out: str) -> dict:
    """summary.json, layers.csv/png (per-layer error growth), generation.csv and divergence.png,
    outliers.csv/png and advisor.csv/png in ``out``."""
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
    _plot_advisor(plt, result["advisor"], os.path.join(out, "advisor.png"))
    write_rows(os.path.join(out, "advisor.csv"), [
        {"strategy": strategy, **point} for strategy, points in result["advisor"]["curves"].items() for point in points])
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


def _plot_advisor(plt, advice, path):
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for strategy, points in advice["curves"].items():
        xs = [0.0] + [p["fraction"] for p in points] + [1.0]
        ys = [advice["all_low"]] + [p["error"] for p in points] + [advice["all_high"]]
        order = np.argsort(xs, kind="stable")
        left.semilogy(np.asarray(xs)[order], np.asarray(ys)[order], marker="o", label=strategy)
    left.axhline(advice["all_low"] / 10, color="gray", linestyle=":", label="10x below all bf16")
    left.set_xlabel("fraction of the rounded operations in float32")
    left.set_ylabel("logits' relative error")
    left.set_title(f"mixed-precision advisor ({advice['tokens']} tokens)")
    left.legend()
    shares = np.asarray(advice["layers"], np.float64)
    right.bar(np.arange(shares.size), shares)
    right.set_xlabel("layer (0: the final norm and the logits)")
    right.set_ylabel("share of the first-order bound")
    right.set_title("where the bound comes from")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
