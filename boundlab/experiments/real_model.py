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
import math

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.arithmetic import Emulated, Exact
from boundlab.condition import autodiff, closed_forms
from boundlab.emulation.mixed_precision import NOTHING, Choice, exact_at_rounded_inputs, mixed, mixed_by_mask
from boundlab.experiments import advisor
from boundlab.output.tables import write_table
from boundlab.output.progress import ProgressBar
from boundlab.formats import get_format
from boundlab.linalg import singular_values
from boundlab.matrix_units import get_unit
from boundlab.models.encoder.network import encode_batch, mean_pool
from boundlab.verdicts import holds, verdict

VARIANTS = ("all", "all-fp32acc", "gemms", "gemms-fp32acc")
FORMATS = ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2")


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
    config, params = model.config, model.params
    if layers is None or layers >= config.layers:
        return config, params
    config = dataclasses.replace(config, layers=layers)
    return config, params | {"layers": {k: v[:layers] for k, v in params["layers"].items()}}


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


# -- per head ---------------------------------------------------------------------------------------
def weight_rank(Wq, Wk) -> tuple[jax.Array, jax.Array]:
    """(numerical rank of W_k^T W_q, sigma_{r+1} / sigma_1 with r = d_h): the rank counts singular
    values above d 2^-52 sigma_1 (round-off of an exactly singular product lies below)."""
    sigma = singular_values(Wk, Wq)
    d = Wq.shape[1]
    rank = jnp.sum(sigma > d * 2.0 ** -52 * sigma[0])
    return rank, sigma[Wq.shape[0]] / sigma[0]


def score_bound(X, Wq, bq, Wk, bk, u: float):
    """The sigma_min-free score bound of one head with biases (Lemma 4.17 (absolute), adapted):

        |fl(S)_{it} - S_{it}| <= (2(d + 1) + d_h + 1) u m_{it} + O(u^2),
        m_{it} = (|W_k||x_i| + |b_k|)^T (|W_q||x_t| + |b_q|) / sqrt(d_h),

    for S_{it} = k_i^T q_t / sqrt(d_h), q = fl(fl(W_q x) + b_q) (a (d+1)-term recursive sum:
    gamma_{d+1}), k likewise, the d_h-term product (gamma_{d_h}) and the division by fl(sqrt(d_h))
    (one rounding; the constant's own rounding is the +1 of the operand).  Each of the three
    first-order terms is at most its gamma times m_{it}.  Returns (bound (n x n), max |S|)."""
    d, dh = X.shape[0], Wq.shape[0]
    q_mag = jnp.abs(Wq) @ jnp.abs(X) + jnp.abs(bq)[:, None]
    k_mag = jnp.abs(Wk) @ jnp.abs(X) + jnp.abs(bk)[:, None]
    magnitude = k_mag.T @ q_mag / math.sqrt(dh)
    S = (Wk @ X + bk[:, None]).T @ (Wq @ X + bq[:, None]) / math.sqrt(dh)
    return (2 * (d + 1) + dh + 1) * u * magnitude, jnp.max(jnp.abs(S))


def head_attention(X, Wq, bq, Wk, bk, Wv, bv):
    """One head's attention on the valid tokens (bidirectional): V psi(K^T Q / sqrt(d_h)) (d_h x n)."""
    dh = Wq.shape[0]
    S = (Wk @ X + bk[:, None]).T @ (Wq @ X + bq[:, None]) / math.sqrt(dh)
    return (Wv @ X + bv[:, None]) @ jax.nn.softmax(S, axis=0)


def analyse_heads(params, config, X, u: float) -> list[dict]:
    """Per layer and head: rank(W_k^T W_q), sigma_{d_h+1}/sigma_1, the softmax's kappa_cc and
    kappa_c,inf (Lemma 3.13, worst query), the head attention's mixed condition number
    kappa_c,inf (Lemma 3.3 by jacfwd) and the score bound relative to max |S| (``score_bound``).

    X: (L + 1, d, n) exact hidden states of one sentence, valid tokens only (layer l's input is X[l]).
    """
    H, dh = config.heads, config.head_dim

    def heads_of(W, b):
        return W.reshape(H, dh, -1), b.reshape(H, dh)

    @jax.jit
    def one_layer(Xl, layer):
        Wq, bq = heads_of(layer["Wq"], layer["bq"])
        Wk, bk = heads_of(layer["Wk"], layer["bk"])
        Wv, bv = heads_of(layer["Wv"], layer["bv"])

        def one_head(wq, b_q, wk, b_k, wv, b_v):
            rank, gap = weight_rank(wq, wk)
            bound, scale = score_bound(Xl, wq, b_q, wk, b_k, u)
            S = (wk @ Xl + b_k[:, None]).T @ (wq @ Xl + b_q[:, None]) / math.sqrt(dh)
            soft = jax.vmap(closed_forms.softmax, in_axes=1)(S)
            attention = autodiff.mixed(lambda Y: head_attention(Y, wq, b_q, wk, b_k, wv, b_v), Xl)
            return {"rank": rank, "sigma_gap": gap, "softmax_kappa_cc": jnp.max(soft.kappa_cc),
                    "softmax_kappa_c_inf": jnp.max(soft.kappa_c_inf), "attention_kappa_c_inf": attention.value,
                    "score_bound_relative": jnp.max(bound) / scale}

        return jax.vmap(one_head)(Wq, bq, Wk, bk, Wv, bv)

    rows = []
    for index in range(config.layers):
        layer = jax.tree.map(lambda a, i=index: jnp.asarray(a[i], jnp.float64), params["layers"])
        values = jax.device_get(one_layer(jnp.asarray(X[index], jnp.float64), layer))
        for head in range(H):
            rows.append({"layer": index + 1, "head": head + 1} |
                        {name: float(v[head]) for name, v in values.items()})
    return rows


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

    n_sites = len(site_list)
    status("advisor: compiling")
    all_low = error(np.zeros(n_sites, bool))
    step("all-low end")
    all_high = error(np.ones(n_sites, bool))
    step("all-high end")
    curves = {}
    for strategy in advisor.STRATEGIES:
        ranking = advisor.order(strategy, contributions, magnitudes, study.seed, costs)
        points = []
        for fraction in study.fractions:
            mask, actual = advisor.prefix_mask(ranking, costs, fraction)
            points.append({"target": fraction, "fraction": actual, "sites": int(mask.sum()), "error": error(mask)})
            step(f"advisor {strategy} {fraction:g}")
        curves[strategy] = points
    best = [(p["fraction"], p["error"]) for s_ in ("first-order", "first-order/cost") for p in curves[s_]]
    curve = [(0.0, all_low)] + best + [(1.0, all_high)]
    top = advisor.order("first-order", contributions, magnitudes)[:10]
    return {"format": study.fmt, "variant": study.advisor_variant, "high": study.high, "sentences": na,
            "sites": n_sites, "all_low": all_low, "all_high": all_high, "curves": curves,
            "fraction_for_10x": advisor.reduction_fraction(curve, all_low, 10),
            "fraction_for_100x": advisor.reduction_fraction(curve, all_low, 100),
            "top_sites": [{"site": site_list[i].label(), "contribution": float(contributions[i]),
                           "operations_fraction": float(costs[i] / costs.sum())} for i in top]}


# -- output -------------------------------------------------------------------------------------------
def _all_hold(bounds):
    """True when every layer's check held, False when one failed, None when one was not checked."""
    values = [b["holds"] for b in bounds]
    return False if False in values else None if None in values or not values else True


def _bounds_verdict(bounds) -> str:
    counts = {label: sum(b["holds"] is value for b in bounds)
              for label, value in (("held", True), ("failed", False), ("not checked", None))}
    if counts["failed"]:
        return f"failed at {counts['failed']} of {len(bounds)} layers"
    if counts["not checked"]:
        return f"not checked at {counts['not checked']} of {len(bounds)} layers (" + "; ".join(
            b["verdict"] for b in bounds if b["holds"] is None) + ")"
    return f"held at every one of {len(bounds)} layers" if bounds else "not checked (no bound computed)"


def summary(result: dict) -> dict:
    """The headline numbers (what ``summary.json`` holds besides the tables)."""
    adv = result["advisor"]
    embeddings = {f"{e['format']} {e['variant']}": {"embedding_error_median": e["embedding_error"]["median"],
                                                      "embedding_error_max": e["embedding_error"]["max"],
                                                      "cosine_min": e["cosine"]["min"],
                                                      "nonfinite_entries": e["nonfinite_entries"]}
                  for e in result["embeddings"]}
    ranks = sorted({int(h["rank"]) for h in result["heads"]})
    d = result["model"]["config"]["d"]
    return {
        "model": result["model"]["name"], "sentences": len(result["sentences"]),
        "tokens": {"max": max(result["tokens"]), "mean": float(np.mean(result["tokens"]))},
        "embeddings": embeddings,
        "first_order_bound_holds": _all_hold(result["bounds"]),
        "first_order_bound_verdict": _bounds_verdict(result["bounds"]),
        "embedding_bound": {f"{b['format']} {b['variant']}": {k: b[k] for k in ("measured", "first_order",
                                                                               "probabilistic", "k_u")}
                            for b in result["bounds"] if b["layer"] == result["model"]["config"]["layers"]},
        "heads": {"rank_WkT_Wq": ranks, "d": d,
                  "theorem_4_30": (f"rank(W_k^T W_q) = {ranks} < d = {d} in every head: sigma_min(W_k^T W_q) = 0, "
                                   "so Remark 4.18's factor and the printed Theorem 4.30 chain are infinite; the "
                                   "sigma_min-free score bound and the autodiff first-order bound stay finite")
                  if max(ranks) < d else "W_k^T W_q has full rank in some head",
                  "softmax_kappa_cc_max": max(h["softmax_kappa_cc"] for h in result["heads"]),
                  "attention_kappa_c_inf_max": max(h["attention_kappa_c_inf"] for h in result["heads"]),
                  "score_bound_relative_max": max(h["score_bound_relative"] for h in result["heads"])},
        "advisor": {k: adv[k] for k in ("format", "variant", "high", "all_low", "all_high", "fraction_for_10x",
                                        "fraction_for_100x")},
    }


def _fraction(value) -> str:
    return "none below 1 (only recomputing everything)" if value is None else f"{value:.3g}"


def headline_lines(headline: dict) -> list[str]:
    """The summary in a few sentences (what the CLI prints and index.md lists)."""
    def number(x, spec=".3g"):
        return "n/a (non-finite)" if x is None else format(x, spec)

    lines = []
    for key, e in headline["embeddings"].items():
        lines.append(f"{key}: embedding error median {number(e['embedding_error_median'])} (max "
                     f"{number(e['embedding_error_max'])}), min cosine {number(e['cosine_min'], '.6f')}, "
                     f"non-finite entries {e['nonfinite_entries']}")
    for key, b in headline["embedding_bound"].items():
        lines.append(f"first-order bound ({key}, embedding): {number(b['first_order'])} (probabilistic "
                     f"{number(b['probabilistic'])}) vs measured {number(b['measured'])}; k u = {number(b['k_u'])}")
    if "first_order_bound_verdict" in headline:
        lines.append(f"first-order bound at every layer: {headline['first_order_bound_verdict']}")
    heads = headline["heads"]
    lines.append(f"heads: {heads['theorem_4_30']}; softmax kappa_cc <= {number(heads['softmax_kappa_cc_max'])}, "
                 f"attention kappa_c,inf <= {number(heads['attention_kappa_c_inf_max'])}")
    adv = headline["advisor"]
    lines.append(f"advisor ({adv['format']} {adv['variant']} + {adv['high']}): all-low {number(adv['all_low'])}, "
                 f"all-high {number(adv['all_high'])}; 10x at a recomputed fraction of "
                 f"{_fraction(adv['fraction_for_10x'])}, 100x at {_fraction(adv['fraction_for_100x'])}")
    return lines


def write(result: dict, out_dir) -> dict:
    """CSV tables, ``layers.png``, ``advisor.png`` and ``summary.json`` in ``out_dir``."""
    import json
    import os

    from boundlab.output.strict_json import strict_json

    os.makedirs(out_dir, exist_ok=True)
    write_table(os.path.join(out_dir, "layers.csv"),
         ["format", "variant", "layer", "state_error_median", "state_error_max", "pooled_error_median", "pooled_error_max"],
         ([r["format"], r["variant"], r["layer"], r["state_error"]["median"], r["state_error"]["max"],
           r["pooled_error"]["median"], r["pooled_error"]["max"]] for r in result["runs"]))
    write_table(os.path.join(out_dir, "embeddings.csv"), ["format", "variant", "sentence", "relative_error", "cosine"],
         ([e["format"], e["variant"], i, err, cos] for e in result["embeddings"]
          for i, (err, cos) in enumerate(zip(e["per_sentence_error"], e["per_sentence_cosine"]))))
    bound_keys = ["format", "variant", "layer", "measured", "first_order", "probabilistic", "holds", "verdict", "k_u"]
    write_table(os.path.join(out_dir, "bounds.csv"), bound_keys, ([b[k] for k in bound_keys] for b in result["bounds"]))
    head_keys = [k for k in result["heads"][0]]
    write_table(os.path.join(out_dir, "heads.csv"), head_keys, ([h[k] for k in head_keys] for h in result["heads"]))
    adv = result["advisor"]
    write_table(os.path.join(out_dir, "advisor.csv"), ["strategy", "target", "fraction", "sites", "error"],
         [["all-low", 0.0, 0.0, 0, adv["all_low"]], ["all-high", 1.0, 1.0, adv["sites"], adv["all_high"]]] +
         [[s, p["target"], p["fraction"], p["sites"], p["error"]] for s, points in adv["curves"].items() for p in points])
    plot_layers(result, os.path.join(out_dir, "layers.png"))
    plot_advisor(result, os.path.join(out_dir, "advisor.png"))
    headline = summary(result)
    full = strict_json({"summary": headline} | {k: v for k, v in result.items()})
    with open(os.path.join(out_dir, "summary.json"), "w") as handle:
        json.dump(full, handle, indent=1, allow_nan=False)
    return headline


def plot_layers(result: dict, path) -> None:
    """Relative error of each layer's pooled state per format and variant, with the bound."""
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    keys = sorted({(r["format"], r["variant"]) for r in result["runs"]}, key=lambda k: (k[0], k[1]))
    colours = plt.cm.viridis(np.linspace(0.05, 0.9, len(keys)))
    for (fmt, variant), colour in zip(keys, colours):
        rows = [r for r in result["runs"] if r["format"] == fmt and r["variant"] == variant]
        layers = [r["layer"] for r in rows]
        for ax, kind in zip(axes, ("state_error", "pooled_error")):
            values = [np.nan if r[kind]["median"] is None else r[kind]["median"] for r in rows]
            ax.semilogy(layers, values, "o-", color=colour, label=f"{fmt} {variant}", ms=3)
    for variant, marker in zip(sorted({b["variant"] for b in result["bounds"]}), ("x", "+", "d", "*")):
        bounds = [b for b in result["bounds"] if b["variant"] == variant]
        fmt = bounds[0]["format"]
        axes[1].semilogy([b["layer"] for b in bounds], [b["first_order"] for b in bounds], "k--", marker=marker,
                         label=f"first-order bound ({fmt} {variant})")
        axes[1].semilogy([b["layer"] for b in bounds], [b["probabilistic"] for b in bounds], "k:", marker=marker,
                         label=f"probabilistic ({fmt} {variant})")
    axes[0].set_title("hidden state (median over sentences)")
    axes[1].set_title("mean-pooled state")
    for ax in axes:
        ax.set_xlabel("layer (0: embeddings)")
        ax.set_ylabel("relative error (2-norm)")
    figure.legend(*axes[1].get_legend_handles_labels(), fontsize=7, loc="outside right upper")
    figure.suptitle(f"{result['model']['name']}: error per layer on {len(result['sentences'])} sentences")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_advisor(result: dict, path) -> None:
    """Measured embedding error against the fraction of operations recomputed in the high format."""
    from boundlab.output.pyplot import pyplot

    plt = pyplot()
    adv = result["advisor"]
    figure, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    styles = {"first-order": "o-", "first-order/cost": "D-", "random": "s--", "activations": "^:"}
    for strategy, points in adv["curves"].items():
        xs = [0.0] + [p["fraction"] for p in points] + [1.0]
        ys = [adv["all_low"]] + [p["error"] for p in points] + [adv["all_high"]]
        ax.loglog(np.maximum(xs, 1e-4), ys, styles.get(strategy, "o-"), label=strategy, ms=4)
    for factor, style in ((10, "-."), (100, ":")):
        ax.axhline(adv["all_low"] / factor, color="grey", ls=style, lw=0.8, label=f"all-{adv['format']} / {factor}")
    ax.axhline(adv["all_high"], color="k", lw=0.8, label=f"all-{adv['high']}")
    ax.set_xlabel(f"fraction of rounded operations in {adv['high']} (0 plotted at 1e-4)")
    ax.set_ylabel("embedding relative error")
    ax.set_title(f"mixed-precision advisor: {adv['format']} ({adv['variant']}) + {adv['high']}")
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=100)
    plt.close(figure)
