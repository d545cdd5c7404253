"""Numerical-fragility diagnostics of a model on a batch, for use inside a training loop.

``diagnose(params, X, ...)`` is one jit-compiled function; ``diagnostics(model, X, ...)`` applies
it to an NNX ``Transformer`` (under ``nnx.jit`` or outside).  For a batch X (B, d, n) it runs
the exact float64 forward once per sample and returns, per layer and for the network:

* the Lemma 4.29 factors (``boundlab.bounds.network.BlockFactors``) and K_l as printed and
  sigma_min-free; log10 of the Theorem 4.30 coefficient (rho_c <= coefficient u, both variants)
  and of the layer-by-layer composition rho_l = K_l (C u + c rho_{l-1}) (``log10_layerwise``);
  the weights-only growth prod_l G_l (printed G: weights only; sigma_min-free: on the
  normalised inputs);
* the measured error of the stack's output under ``Emulated(fmt)`` for each format, against the
  float64 forward of the rounded operands (``transformer.compare``): componentwise rho_c
  (maximum over the batch) and normwise ||Y^ - Y||_F / ||Y||_F over the whole batch (Baek's
  observed error);
* Baek's diagnostics (``boundlab.fragility``) and his predictor, summed over layers.

Per-sample quantities are reduced over the batch by their maximum (the worst input).  The
hypotheses of Theorem 4.30 are checked with the largest u among the formats (the most
demanding), each also on its own (``flags["hypothesis: <name>"]``, as printed, every layer and
every sample); ``flags["finite"]`` is False when a weight or an input holds NaN or inf (then every
value is NaN), ``flags["normalisation defined"]`` is False when a normalisation's input is
constant (layer norm) or zero (RMS norm) at some layer (the quantities it touches are then
NaN or inf).  Nothing raises under ``jit``: the flags say what is wrong.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flax import nnx

from boundlab.arithmetic import Emulated, Exact
from boundlab.bounds.network import block_factors, theorem_4_30
from boundlab.errors import relative_componentwise
from boundlab.formats import get_format
from boundlab.fragility import layer_diagnostics
from boundlab.models.paper.comparison import compare
from boundlab.models.paper.network import Params, forward

DEFAULT_FORMATS = ("bf16", "fp16")
NETWORK = ("log10_theorem_4_30", "log10_theorem_4_30_free", "log10_layerwise", "log10_layerwise_free", "log10_growth",
           "log10_growth_free", "baek_predictor")
FLAGS = ("finite", "theorem hypotheses", "theorem hypotheses (sigma_min-free)", "normalisation defined")


ERROR_KINDS = ("componentwise", "normwise")


def error_key(fmt: str, kind: str = "normwise") -> str:
    """The key under which ``Diagnostics.network`` (and the rows of ``scalars()``, the columns of
    the training study's CSV) hold the measured output error under ``fmt``: "error_<kind>/<fmt>".
    Readers take the key from here rather than spelling it."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"kind is 'normwise' or 'componentwise', not {kind!r}")
    return f"error_{kind}/{fmt}"


def network_names(formats) -> tuple[str, ...]:
    """The keys of ``Diagnostics.network`` for these formats."""
    return NETWORK + tuple(error_key(name, kind) for name in formats for kind in ERROR_KINDS)


class Diagnostics(NamedTuple):
    """``layers``: name -> (L,) array; ``network``: name -> scalar; ``flags``: name -> bool."""

    layers: dict
    network: dict
    flags: dict

    def error(self, fmt: str, kind: str = "normwise") -> jax.Array:
        """The measured error of the network's output under ``fmt``: ``kind`` "normwise"
        (||Y^ - Y||_F / ||Y||_F over the batch) or "componentwise" (rho_c, worst sample)."""
        name = error_key(fmt, kind)
        if name not in self.network:
            formats = sorted({key.split("/", 1)[1] for key in self.network if key.startswith("error_")})
            raise KeyError(f"{fmt!r} was not diagnosed; the formats are {formats}")
        return self.network[name]

    def scalars(self) -> dict:
        """Every network quantity and flag as a Python number (for logging; not under jit)."""
        out = {name: float(value) for name, value in self.network.items()}
        out.update({f"flag/{name}": bool(value) for name, value in self.flags.items()})
        return out


def _defined(raw, normalised):
    """Every normalised column finite where its input column is (NaN inputs are another flag)."""
    return jnp.all(jnp.all(jnp.isfinite(normalised), axis=-2) | ~jnp.all(jnp.isfinite(raw), axis=-2))


def _sample(params: Params, X, norm: str, u: float, eps: float, units: dict):
    """Everything that depends on one input X (d, n)."""
    _, inter = forward(params, X, Exact(), norm, return_intermediates=True, cast=False)
    factors = jax.vmap(lambda layer, i: block_factors(i.inputs, layer, norm, u, i))(params, inter)
    printed = theorem_4_30(params, X, norm=norm, u=u, factors=factors)
    free = theorem_4_30(params, X, norm=norm, u=u, factors=factors, sigma_min_free=True)
    baek = jax.vmap(lambda layer, i: layer_diagnostics(layer, i, norm, eps, units))(params, inter)
    layers = {"K": factors.K(False), "K_free": factors.K(True), "G": factors.growth, "G_free": factors.growth_free,
              "xi_attention_residual": factors.xi_attention_residual, "xi_attention": factors.xi_attention,
              "xi_feed_forward": factors.xi_feed_forward, "omega": factors.omega,
              "layer_norm_x": factors.layer_norm_x, "layer_norm_y": factors.layer_norm_y,
              "log10_layerwise": printed.terms["layerwise_per_layer"], **baek}
    layers["log10_layerwise"] = jnp.log10(layers["log10_layerwise"])
    network = {"log10_theorem_4_30": printed.terms["log10_coefficient"],
               "log10_theorem_4_30_free": free.terms["log10_coefficient"],
               "log10_layerwise": printed.terms["log10_layerwise"],
               "log10_layerwise_free": free.terms["log10_layerwise"],
               "log10_growth": jnp.log10(printed.terms["weights_only_growth"]),
               "log10_growth_free": jnp.log10(free.terms["weights_only_growth"]),
               "baek_predictor": jnp.sum(baek["baek_layer"])}
    flags = {"theorem hypotheses": jnp.all(jnp.stack(list(printed.flags.values()))),
             "theorem hypotheses (sigma_min-free)": jnp.all(jnp.stack(list(free.flags.values()))),
             "normalisation defined": _defined(inter.inputs, inter.attention_input)
             & _defined(inter.attention_residual, inter.perceptron_input),
             **{f"hypothesis: {name}": value for name, value in printed.flags.items()}}
    return layers, network, flags


@partial(jax.jit, static_argnames=("norm", "formats", "eps"))
def diagnose(params: Params, X, *, norm: str = "layer", formats: tuple[str, ...] = DEFAULT_FORMATS,
             eps: float = 1e-5) -> Diagnostics:
    """The diagnostics of the network ``params`` (stacked ``Params``) on a batch X (B, d, n) or
    one input (d, n); see the module docstring.  Needs ``jax_enable_x64``."""
    params = Params(*params) if isinstance(params, Params) else Params(**{k: params[k] for k in Params._fields})
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    X = jnp.asarray(X, jnp.float64)
    X = X[None] if X.ndim == 2 else X
    units = {name: get_format(name).unit_roundoff for name in formats}
    u = max(units.values())
    layers, network, flags = jax.vmap(lambda x: _sample(params, x, norm, u, eps, units))(X)
    layers = {name: jnp.max(value, axis=0) for name, value in layers.items()}
    network = {name: jnp.max(value, axis=0) for name, value in network.items()}
    flags = {name: jnp.all(value) for name, value in flags.items()}
    for name in formats:
        # loops, not unrolled sums: bit for bit the same (round to nearest), and on a vmapped batch
        # both faster to run (about 3x at d = 16 on the CPU) and to compile
        result = jax.vmap(lambda x: compare(params, x, Emulated(name, unroll=0), norm))(X)
        emulated = result.emulated.astype(jnp.float64)
        network[error_key(name, "componentwise")] = jnp.max(relative_componentwise(emulated, result.exact, axis=(1, 2)))
        network[error_key(name, "normwise")] = jnp.linalg.norm((emulated - result.exact).ravel()) \
            / jnp.linalg.norm(result.exact.ravel())
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(params)])) & jnp.all(jnp.isfinite(X))
    flags = {"finite": finite, **flags}
    poison = lambda value: jnp.where(finite, value, jnp.nan)  # noqa: E731
    return Diagnostics(jax.tree.map(poison, layers), jax.tree.map(poison, network), flags)


def diagnostics(model, X, *, formats: tuple[str, ...] = DEFAULT_FORMATS, eps: float = 1e-5) -> Diagnostics:
    """``diagnose`` for an NNX ``boundlab.models.Transformer`` (its weights and its norm)."""
    from boundlab.models.paper.module import to_params

    return diagnose(to_params(model), X, norm=model.norm, formats=tuple(formats), eps=eps)


class WorstMetric(nnx.Metric):
    """An ``nnx.Metric`` of fixed names: the elementwise maximum of each value over the updates
    (NaN propagates: a NaN batch stays visible) and the logical AND of each flag; ``compute()``
    returns ``{name: value}`` with the flags under ``"flag/<name>"`` (NaN and False before any
    update).  Subclasses say in ``update`` where the values come from (``_record``)."""

    def __init__(self, names, flag_names, argname: str):
        self.names, self.flag_names, self.argname = tuple(names), tuple(flag_names), argname
        self.worst = nnx.metrics.MetricState(jnp.full((len(self.names),), jnp.nan))
        self.flags = nnx.metrics.MetricState(jnp.zeros((len(self.flag_names),), bool))
        self.count = nnx.metrics.MetricState(jnp.zeros((), jnp.int32))

    def reset(self) -> None:
        self.worst[...] = jnp.full((len(self.names),), jnp.nan)
        self.flags[...] = jnp.zeros((len(self.flag_names),), bool)
        self.count[...] = jnp.zeros((), jnp.int32)

    def _argument(self, kwargs, what: str):
        if self.argname not in kwargs:
            raise TypeError(f"Expected keyword argument '{self.argname}' ({what})")
        return kwargs[self.argname]

    def _record(self, values, flags) -> None:
        values = jnp.stack([jnp.asarray(v, self.worst[...].dtype) for v in values])
        flags = jnp.stack([jnp.asarray(f, bool) for f in flags])
        first = self.count[...] == 0
        self.worst[...] = jnp.where(first, values, jnp.maximum(self.worst[...], values))
        self.flags[...] = jnp.where(first, flags, self.flags[...] & flags)
        self.count[...] = self.count[...] + 1

    def compute(self) -> dict:
        out = dict(zip(self.names, self.worst[...]))
        out.update({f"flag/{name}": value for name, value in zip(self.flag_names, self.flags[...])})
        return out


class FragilityMetric(WorstMetric):
    """An ``nnx.Metric`` that keeps the worst network diagnostics over the batches it is shown.

    ``update(diagnostics=report)`` (a ``Diagnostics``, e.g. from ``diagnostics`` inside a jitted
    eval step; other keyword arguments are ignored, so it sits in an ``nnx.MultiMetric`` beside
    ``Average("loss")``) takes the elementwise maximum of every network quantity (NaN
    propagates: a NaN batch stays visible) and the logical AND of every flag; ``compute()``
    returns ``{name: value}`` with the flags under ``"flag/<name>"`` (NaN and False before any
    update).

    >>> metric = FragilityMetric(formats=("bf16",))
    >>> sorted(metric.compute())[:2]
    ['baek_predictor', 'error_componentwise/bf16']
    """

    def __init__(self, formats=DEFAULT_FORMATS, argname: str = "diagnostics"):
        super().__init__(network_names(tuple(formats)), FLAGS, argname)

    def update(self, **kwargs) -> None:
        report = self._argument(kwargs, "a boundlab.analysis.monitoring.Diagnostics")
        missing = [name for name in self.names if name not in report.network]
        if missing:
            raise ValueError(f"the diagnostics lack {missing}: evaluate them with the metric's formats")
        self._record([report.network[name] for name in self.names], [report.flags[name] for name in FLAGS])
