"""The decoder study (``boundlab model smollm2``): SmolLM2-135M in the arithmetics users run, and the
errors they feel, against the exact (float64) model.

Arithmetics (``ARITHMETICS``):

* ``"bf16"``, ``"fp16"``: every operation rounded into the format (Model 4.1), dot products and
  sums accumulated in it (``Emulated(fmt)``);
* ``"bf16-fp32acc"``, ``"fp16-fp32acc"``: the same with a float32 accumulator;
* ``"autocast-bf16"``: PyTorch autocast's split, the GEMMs on an Ampere tensor core
  (``ampere-mma-bf16-fp32``: bf16 operands, float32 accumulation, the result rounded to bf16) and
  every other operation (norms, softmax, SiLU, residual additions, RoPE) in float32.

On the shipped text (``boundlab.models.sentences()``, joined; the first ``text_tokens`` tokens):
per arithmetic ``analysis.language.next_token_errors`` (logits' normwise relative error, KL
divergence of the next-token distribution, top-1 agreement, perplexity against float64's) and the
per-layer error growth ||X_l_hat - X_l||_F / ||X_l||_F of the hidden states.  On the prompts
(``PROMPTS``): greedy generation of ``steps`` tokens in each arithmetic against the exact one,
and the first step at which the tokens differ (``analysis.language.first_divergence``).

The arithmetics run the plain program (``Native()``) under ``boundlab.emulation.mixed`` for
autocast, and the family's own ``arithmetic=`` (bit for bit ``emulate`` of the plain program)
otherwise.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from boundlab.analysis.language import first_divergence, next_token_errors
from boundlab.arithmetic import Emulated, Exact, Native
from boundlab.emulation import Choice, mixed
from boundlab.errors import relative_normwise
from boundlab.experiments.real_model import truncated
from boundlab.matrix_units import get_unit
from boundlab.models import decoder as dec
from boundlab.models import load, sentences, smollm2
from boundlab.output.pyplot import pyplot
from boundlab.output.strict_json import write_json
from boundlab.output.tables import write_rows

ARITHMETICS = ("bf16", "fp16", "bf16-fp32acc", "fp16-fp32acc", "autocast-bf16")
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


QUICK = dict(arithmetics=("bf16", "autocast-bf16"), prompts=PROMPTS[:2], steps=4, text_tokens=24, layers=4)


def low_policy(name: str) -> Emulated:
    """The rounding policy of an arithmetic (its GEMMs' policy for autocast)."""
    if name == "autocast-bf16":
        return Emulated("bf16", accumulation=get_unit("ampere-mma-bf16-fp32"), unroll=0)
    fmt, _, accumulator = name.partition("-")
    return Emulated(fmt, accumulator="fp32" if accumulator else None, unroll=0)


def computed(name: str, f):
    """``f(arithmetic)(params, ids)`` in the arithmetic ``name``: for autocast, ``f(Native())`` (the
    plain program) with every site but the GEMMs in float32 (``boundlab.emulation.mixed``); for
    the others ``f(policy)``, the family's own arithmetic (bit for bit ``emulate`` of the plain
    program, tests/test_decoder.py, and three times faster to compile)."""
    if name == "autocast-bf16":
        return mixed(f(Native()), low_policy(name), Emulated("fp32", unroll=0),
                     Choice(primitives=frozenset({"dot_general"}), invert=True))
    return jax.jit(f(low_policy(name)))


def text_ids(model, tokens: int) -> np.ndarray:
    """The first ``tokens`` tokens of the shipped sentences, joined into one text."""
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
        return lambda p, q: dec.generate(p, q, study.steps, config, arithmetic)

    exact_logits, exact_states = jax.jit(lambda p, i: dec.forward(p, i, config, Exact(), return_layers=True))(params, ids)
    prompts = [jnp.asarray(smollm2.encode(model, prompt)) for prompt in study.prompts]
    exact_tokens = [dec.generate(params, prompt, study.steps, config) for prompt in prompts]
    result = {"model": study.model, "layers": config.layers, "text_tokens": int(ids.shape[0]), "steps": study.steps,
              "exact": {"perplexity": float(jnp.exp(dec.next_token_loss(exact_logits, ids))),
                        "continuations": {p: smollm2.decode(model, t) for p, t in zip(study.prompts, exact_tokens)}},
              "arithmetics": {}}
    for name in study.arithmetics:
        say(f"{name}: the text")
        low = low_policy(name)
        rounded = dec.cast_params(params, low)  # the weights as the arithmetic stores them
        logits, states = computed(name, forward)(rounded, ids)
        errors = next_token_errors(logits, exact_logits, ids)
        layer_errors = relative_normwise(states.astype(jnp.float64), exact_states, axis=(1, 2))
        say(f"{name}: generation")
        generation = computed(name, generate)
        generations = [generation(rounded, prompt) for prompt in prompts]
        divergence = [int(first_divergence(g, e)) for g, e in zip(generations, exact_tokens)]
        result["arithmetics"][name] = {
            "text": errors.summary(), "layer_errors": [float(e) for e in layer_errors],
            "first_divergence": divergence,
            "generations_equal": sum(d == study.steps for d in divergence),
            "continuations": {p: smollm2.decode(model, g) for p, g in zip(study.prompts, generations)}}
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
    write_json(os.path.join(out, "summary.json"), result)
    return {name: result["arithmetics"][name]["text"] for name in names}
