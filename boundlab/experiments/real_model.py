"""The real-model study: a pretrained transformer (MiniLM-L6) in low precision on real text.

For the shipped sentences (``boundlab.models.sentences``) it measures, against the exact float64
forward:

* **runs**: for each format, the emulated forward with every operation rounded (``"all"``,
  accumulation in the format, Model 4.1), the same with sums and dot products accumulated in
  float32 (``"all-fp32acc"``), with only the GEMMs rounded and softmax, GELU and layer norm in
  float32 (``"gemms"``, as the LAMP authors' code does), and the GEMMs in the format with a
  float32 accumulator (``"gemms-fp32acc"``; Model 4.1 with an accumulator still rounds each
  product to the format, which tensor cores do not; but their fused sums truncate, to 13 bits on
  Hopper's FP8 path, so this is no upper bound on real hardware), and the GEMMs on a matrix unit
  (``"gemms@<unit>"``, e.g. ``gemms@hopper-wgmma-fp8_e4m3-fp32``: ``boundlab.matrix_units``, the
  operands quantised into the unit's input format, its accumulation bit for bit, the result
  rounded into the format): the relative error of each
  layer's hidden state (Frobenius over the valid tokens) and of each layer's mean-pooled state,
  the cosine similarity of the sentence embeddings to the exact ones, and overflows (non-finite
  entries);
* **bounds**: the autodiff first-order bound (``boundlab.first_order``, lumped: Lemma 4.3's
  constant per dot product) of every layer's pooled state, for the every-operation variants,
  beside the measured error (a few sentences: one VJP per bounded entry).  With accumulation in
  bf16, k u >= 1 for MiniLM's dot products (k = 384, 1536), outside every worst-case bound's
  hypotheses: the bound is then far above 1, which ``bounds[*].k_u`` states;
* **heads**: per layer and head, the rank of W_k^T W_q (32 of 384 here, so Remark 4.18's factor and
  the printed Theorem 4.30 chain are infinite), the softmax condition numbers (Lemma 3.13, closed
  form), the head attention's mixed condition number (Lemma 3.3 by ``jax.jacfwd``) and the
  sigma_min-free score bound (Lemma 4.17 (absolute) for a head with biases; see ``score_bound``);
* **advisor** (``boundlab.experiments.advisor``): which operations to recompute in float32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.arithmetic import Emulated, Exact
from boundlab.emulation.mixed_precision import NOTHING, Choice, exact_at_rounded_inputs, mixed, mixed_by_mask
from boundlab.experiments import advisor
from boundlab.experiments.head_analysis import analyse_heads
from boundlab.experiments.head_analysis import score_bound as score_bound
from boundlab.experiments.head_analysis import weight_rank as weight_rank
from boundlab.experiments.real_model_files import headline_lines as headline_lines
from boundlab.experiments.real_model_files import summary as summary
from boundlab.experiments.real_model_files import write as write
from boundlab.output.progress import ProgressBar
from boundlab.formats import get_format
from boundlab.matrix_units import get_unit
from boundlab.models.encoder.network import encode_batch, mean_pool
from boundlab.verdicts import holds, verdict

VARIANTS = ("all", "all-fp32acc", "gemms", "gemms-fp32acc")
FORMATS = ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2")
STUDY_MODELS = ("minilm",)  # the encoders this study runs


@dataclasses.dataclass(frozen=True)
class ModelStudy:
    """What the real-model study runs (``boundlab model``).

    fmt: the format of the bounds and the advisor; formats: the formats of the runs; high: the
    advisor's higher format; sentences: how many shipped sentences (padded to ``length``
    tokens); bound_sentences, head_sentences, advisor_sentences: the first few sentences used for
    the first-order bounds, the per-head analysis and the advisor's measurements; fractions: the
    recomputed fractions (of the rounded operations) on the advisor's curve; bound_variants: the
    every-operation variants bounded; advisor_variant: the advisor's low arithmetic; layers: keep
    only the first layers of the model (None: all).
    """

    model: str = "minilm"
    fmt: str = "bf16"
    formats: tuple = FORMATS
    variants: tuple = VARIANTS
    high: str = "fp32"
    sentences: int = 32
    length: int = 32
    bound_sentences: int = 1
    head_sentences: int = 2
    advisor_sentences: int = 8
    fractions: tuple = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    bound_variants: tuple = ("all", "all-fp32acc")
    advisor_variant: str = "all-fp32acc"
    layers: int | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("sentences", "length", "bound_sentences", "head_sentences", "advisor_sentences"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in (self.fmt, self.high, *self.formats):
            get_format(name)  # unknown names fail here, with the list of presets
        if self.layers is not None and (not isinstance(self.layers, int) or self.layers < 1):
            raise ValueError(f"layers must be a positive int or None, got {self.layers!r}")
        for variant in (*self.variants, *self.bound_variants, self.advisor_variant):
            if variant.startswith("gemms@") and variant in self.variants:
                get_unit(variant.removeprefix("gemms@"))  # a one-line error naming the units
            elif variant not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}; use {VARIANTS} or gemms@<matrix unit> (runs only, "
                                 f"e.g. gemms@hopper-wgmma-fp8_e4m3-fp32)")
        if any(not 0 < f < 1 for f in self.fractions):
            raise ValueError(f"fractions must lie in (0, 1), got {self.fractions!r}")
        if max(self.bound_sentences, self.head_sentences, self.advisor_sentences) > self.sentences:
            raise ValueError("bound_sentences, head_sentences and advisor_sentences must not exceed sentences")


QUICK = dict(sentences=8, formats=("bf16", "fp8_e4m3"), variants=("all", "all-fp32acc", "gemms-fp32acc"),
             bound_sentences=1, head_sentences=1, advisor_sentences=4, fractions=(0.01, 0.05, 0.2),
             bound_variants=("all-fp32acc",))


# -- the function every run, bound and advisor evaluates ------------------------------------------
def layers_fn(config, unroll: bool = True):
    """(params, ids, valid) -> (pooled (B, L + 1, d), states (B, L + 1, d, n)): every layer's hidden
    state and its mean-pooled state (row 0: the embeddings; the last pooled row is the sentence
    embedding before normalisation), traced with ``Exact()`` so that ``mixed`` and
    ``first_order`` round it as Model 4.1 says.  ``unroll=False`` scans the layers (fast compile;
    one site per operation for all layers)."""

    def both(params, ids, valid):
        _, states = encode_batch(params, ids, valid, config, Exact(), return_layers=True, unroll_layers=unroll)
        pooled = jax.vmap(lambda S, v: jax.vmap(lambda X: mean_pool(X, v))(S))(states, valid)
        return pooled, states

    return both


def pooled_layers_fn(config):
    """The pooled states of ``layers_fn`` alone, layers unrolled (the bound's and the advisor's
    function: every layer's operations are sites of their own)."""
    both = layers_fn(config, unroll=True)
    return lambda params, ids, valid: both(params, ids, valid)[0]


def low_policy(fmt: str, variant: str):
    """The low-precision policy of a variant (``unroll=0``: loops compile faster at this size);
    ``gemms@<unit>``: the GEMMs on a matrix unit (``boundlab.matrix_units``), rounded into fmt."""
    if variant.startswith("gemms@"):
        return Emulated(fmt, accumulation=get_unit(variant.removeprefix("gemms@")), unroll=0)
    if variant.endswith("fp32acc"):
        return Emulated(fmt, accumulator="fp32", unroll=0)
    return Emulated(fmt, unroll=0)


def variant_choice(variant: str) -> Choice:
    """Which sites run in float32: none (every operation rounded), or all but the GEMMs."""
    return NOTHING if variant.startswith("all") else Choice(primitives=frozenset({"dot_general"}), invert=True)


def run_variant(f, params, ids, valid, fmt: str, variant: str, high: str = "fp32"):
    """``f`` with the variant's sites in ``fmt`` and the rest in ``high``."""
    return mixed(f, low_policy(fmt, variant), Emulated(high, unroll=0), variant_choice(variant))(params, ids, valid)


def truncated(model, layers):
    """(config, params) of the model's first ``layers`` layers (None: all of them)."""
    return truncate(model.config, model.params, layers)


def truncate(config, params, layers):
    """(config, params) of the first ``layers`` layers of a stacked-layers family (None: all)."""
    if layers is None or layers >= config.layers:
        return config, params
    return dataclasses.replace(config, layers=layers), params | {"layers": {k: v[:layers] for k, v in params["layers"].items()}}


def k_u(config, fmt: str, variant: str) -> float:
    """max k u_acc over the dot products and sums of the model (k = d, ffn, tokens): the worst-case
    bounds need it below 1 (Lemma 4.3's gamma_k)."""
    policy = low_policy(fmt, variant)
    return max(config.d, config.ffn) * (policy.accumulator or policy.fmt).unit_roundoff


# -- measured errors --------------------------------------------------------------------------------
def state_errors(exact, computed, valid) -> np.ndarray:
    """(B, L + 1): ||computed - exact||_F / ||exact||_F of each hidden state over the valid tokens."""
    exact, computed = np.asarray(exact, np.float64), np.asarray(computed, np.float64)
    mask = np.asarray(valid)[:, None, None, :]
    diff = np.where(mask, computed - exact, 0.0)
    ref = np.where(mask, exact, 0.0)
    return np.sqrt(np.sum(diff ** 2, axis=(2, 3))) / np.sqrt(np.sum(ref ** 2, axis=(2, 3)))


def vector_errors(exact, computed) -> np.ndarray:
    """||computed - exact||_2 / ||exact||_2 along the last axis."""
    exact, computed = np.asarray(exact, np.float64), np.asarray(computed, np.float64)
    return np.linalg.norm(computed - exact, axis=-1) / np.linalg.norm(exact, axis=-1)


def cosines(exact, computed) -> np.ndarray:
    """Cosine similarity of each computed embedding to the exact one (NaN when not finite)."""
    exact, computed = np.asarray(exact, np.float64), np.asarray(computed, np.float64)
    with np.errstate(invalid="ignore"):
        return np.sum(exact * computed, axis=-1) / (np.linalg.norm(exact, axis=-1) * np.linalg.norm(computed, axis=-1))


def summarise(values) -> dict:
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"median": None, "max": None, "min": None, "nonfinite": int(values.size)}
    return {"median": float(np.median(finite)), "max": float(np.max(finite)), "min": float(np.min(finite)),
            "nonfinite": int(values.size - finite.size)}


# -- the study ----------------------------------------------------------------------------------------
def _steps(study: ModelStudy) -> int:
    return 1 + len(study.formats) * len(study.variants) + len(study.bound_variants) + 1 + 3 + \
        len(advisor.STRATEGIES) * len(study.fractions)


def run(study: ModelStudy, progress: bool = True) -> dict:
    """Run the study; returns the results as plain Python (what ``write`` saves)."""
    from boundlab.models import load, sentences, tokenize
    from boundlab.sensitivity import first_order

    bar = ProgressBar(_steps(study), f"model {study.model}") if progress else None

    def step(what):
        if bar is not None:
            bar.update(1, f"model {study.model}: {what}")

    def status(what):
        if bar is not None:
            bar.status(what)

    model = load(study.model)
    texts = sentences()[:study.sentences]
    ids, valid = tokenize(model, texts, length=max(study.length, 2))
    config, params = truncated(model, study.layers)
    scanned = layers_fn(config, unroll=False)
    # float64 arrays holding the float32 weights exactly: the functions are traced with Exact()
    params = params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    exact_pooled, exact_states = (np.asarray(v) for v in jax.jit(scanned)(params64, ids, valid))
    step("exact forward")

    runs, embeddings = [], []
    for fmt in study.formats:
        for variant in study.variants:
            status(f"{fmt} {variant}")
            pooled, states = (np.asarray(v, np.float64) for v in
                              run_variant(scanned, params, ids, valid, fmt, variant, study.high))
            state_err = state_errors(exact_states, states, valid)
            pooled_err = vector_errors(exact_pooled, pooled)
            cos = cosines(exact_pooled[:, -1], pooled[:, -1])
            for layer in range(config.layers + 1):
                runs.append({"format": fmt, "variant": variant, "layer": layer,
                             "state_error": summarise(state_err[:, layer]),
                             "pooled_error": summarise(pooled_err[:, layer])})
            embeddings.append({"format": fmt, "variant": variant, "unit_roundoff": get_format(fmt).unit_roundoff,
                               "embedding_error": summarise(pooled_err[:, -1]), "cosine": summarise(cos),
                               "nonfinite_entries": int(np.sum(~np.isfinite(states))),
                               "sentences_nonfinite": int(np.sum(~np.all(np.isfinite(states), axis=(1, 2, 3)))),
                               "per_sentence_error": pooled_err[:, -1].tolist(), "per_sentence_cosine": cos.tolist()})
            step(f"{fmt} {variant}")

    # first-order bounds of every layer's pooled state, beside the measured error (padding cut to
    # the longest of these sentences: padded tokens change no valid result, bit for bit)
    nb = study.bound_sentences
    unrolled = pooled_layers_fn(config)
    ids_b, valid_b = _trimmed(ids[:nb], valid[:nb])
    bounds, bound_records = [], {}
    for variant in study.bound_variants:
        status(f"first-order bound, {study.fmt} {variant}")
        record = first_order(unrolled, low_policy(study.fmt, variant), chunk=256, lumped=True)(params, ids_b, valid_b)
        bound_records[variant] = record
        value = np.asarray(record.value, np.float64)
        scale = np.linalg.norm(value, axis=-1)
        deterministic = np.linalg.norm(np.asarray(record.bound), axis=-1) / scale
        probabilistic = np.linalg.norm(np.asarray(record.probabilistic), axis=-1) / scale
        measured = vector_errors(value, np.asarray(run_variant(scanned, params, ids_b, valid_b, study.fmt,
                                                               variant, study.high)[0], np.float64))
        for layer in range(config.layers + 1):
            # held, failed or not checked (a NaN measurement: the emulated encoder overflowed)
            check = verdict(measured[:, layer], deterministic[:, layer], overflow=np.isnan(measured[:, layer]))
            bounds.append({"format": study.fmt, "variant": variant, "layer": layer,
                           "measured": float(np.max(measured[:, layer])),
                           "first_order": float(np.max(deterministic[:, layer])),
                           "probabilistic": float(np.max(probabilistic[:, layer])),
                           "holds": holds(check), "verdict": check["label"],
                           "k_u": k_u(config, study.fmt, variant)})
        step(f"first-order bound {variant}")

    # per head, on the exact hidden states of the first sentences
    u = get_format(study.fmt).unit_roundoff
    heads = []
    status("per-head analysis")
    for s in range(study.head_sentences):
        keep = np.asarray(valid[s])
        rows = analyse_heads(params, config, exact_states[s][:, :, keep], u)
        heads.extend({"sentence": s} | row for row in rows)
    step("per-head analysis")

    result = {"study": dataclasses.asdict(study), "model": {"name": model.name, "config": dataclasses.asdict(config)},
              "sentences": texts, "tokens": np.sum(valid, axis=1).tolist(), "runs": runs, "embeddings": embeddings,
              "bounds": bounds, "heads": heads}
    record = bound_records.get(study.advisor_variant)
    if record is None:
        status(f"first-order contributions, {study.fmt} {study.advisor_variant}")
        record = first_order(unrolled, low_policy(study.fmt, study.advisor_variant), chunk=256, lumped=True,
                             outputs=lambda y: y[:, -1])(params, ids_b, valid_b)
    result["advisor"] = run_advisor(study, config, params, ids, valid, record, step, status)
    if bar is not None:
        bar.close()
    return result


def _trimmed(ids, valid):
    """ids and valid with the padding past the longest sentence cut off."""
    n = int(np.max(np.sum(valid, axis=1)))
    return ids[:, :n], valid[:, :n]


def run_advisor(study, config, params, ids, valid, record, step, status) -> dict:
    """The advisor's curve: error of the sentence embedding against the recomputed fraction, with
    the weights and constants stored in the low format and measured against the exact forward at them
    (the arithmetic's share of the error; storing weights in bf16 is a separate decision, whose
    effect the runs' "all" variants include)."""
    f = pooled_layers_fn(config)
    na = study.advisor_sentences
    ids, valid = _trimmed(ids[:na], valid[:na])
    low, high = low_policy(study.fmt, study.advisor_variant), Emulated(study.high, unroll=0)
    site_list = record.sites
    costs = np.array([site.operations for site in site_list], np.float64)
    shares = np.asarray(record.contributions)
    if shares.ndim == 4:  # (sites, B, L + 1, d): the sentence embedding is the last pooled row
        shares = shares[:, :, -1, :]
    contributions = np.sum(shares.reshape(len(site_list), -1), axis=1)
    # weights and constants stored in the low format: the advisor is about arithmetic, so its
    # reference is the exact forward at the rounded weights and constants (the first-order
    # bound's value, too)
    stored = jax.tree.map(lambda a: jnp.asarray(low.cast(jnp.asarray(a)), jnp.float64), params)
    magnitudes = advisor.site_magnitudes(f, Exact(), stored, ids[:1], valid[:1])
    step("site magnitudes")
    evaluate = mixed_by_mask(f, low, high, inputs="low")
    reference = np.asarray(exact_at_rounded_inputs(f, low)(params, ids[:na], valid[:na]))[:, -1]

    def error(mask):
        out = np.asarray(evaluate(mask, params, ids[:na], valid[:na]), np.float64)[:, -1]
        return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))

    status("advisor: compiling")
    swept = advisor.sweep(error, contributions, costs, study.fractions, advisor.STRATEGIES, magnitudes, study.seed,
                          step)
    ranked = ("first-order", "first-order/cost")
    top = advisor.order("first-order", contributions, magnitudes)[:10]
    return {"format": study.fmt, "variant": study.advisor_variant, "high": study.high, "sentences": na,
            "sites": len(site_list), **swept,
            "fraction_for_10x": advisor.reduction(swept, ranked, 10),
            "fraction_for_100x": advisor.reduction(swept, ranked, 100),
            "top_sites": [{"site": site_list[i].label(), "contribution": float(contributions[i]),
                           "operations_fraction": float(costs[i] / costs.sum())} for i in top]}


