"""Diagnostics of any model, part by part: ``model_diagnostics(model, x)``.

For a Flax NNX model (or a JAX function with ``weights=``) and a batch, the parts found by
``boundlab.structure`` (attention blocks, layer and RMS norms, perceptrons, per layer) each get:

* **measured error** under every format in ``formats``: the whole model run with Model 4.1's
  roundings (``emulate``'s interpreter), the part's result compared with the exact (float64)
  run at the same rounded inputs: componentwise rho_c = max_i |y^_i - y_i| / |y_i| and normwise
  ||y^ - y||_F / ||y||_F.  It is the error accumulated up to that part, as the model computes it;
* **first-order share** (``first_order``): the model output's first-order bound,
  |y^_j - y_j| <= sum_i |dy_j/dv_i| u |v_i| + O(u^2) over every rounding v_i, split by the part
  that makes each rounding (the part's operations: the data flow from its first defining
  operation to its result; for attention the score product to the value product, for a norm the
  centring to the division, for a perceptron the first product to the second).  ``share`` sums
  the part's terms over all output entries; the shares and ``other`` (roundings outside every
  part: projections, embeddings, residual additions, heads) add up to the bound summed over
  entries;
* **condition number** (``jax.jacfwd``): the componentwise relative condition number (Lemma
  3.3) kappa = max_i sum_j |dy_i/dx_j| |x_j| / |y_i| of the part's operations as a function of
  their data-dependent inputs (attention: queries, keys and values; a norm: its input; a
  perceptron: its input to the first product), at the exact values, over the whole batch;
* **Baek's diagnostics** (``boundlab.fragility``, arXiv 2510.21770), from the exact values:
  attention: kappa_score = ||Q||_2 ||K||_2 / ||Q^T K||_2 (per head and sample, the maximum;
  scale-free, so any 1/sqrt(d_h) is irrelevant), kappa_softmax = max over query rows of
  lambda_max(diag(p) - p p^T) ||s||_2 / ||p||_2 over the visible scores s (p > 0), kappa(V) =
  sigma_max / sigma_min of each head's values; norms: sigma_med (median over tokens of the
  standard deviation, or the root mean square for RMS norm, of the norm's input) and, with the
  model's own epsilon, C_LN = sigma/sqrt(eps) + sigma^2/eps + 1 and rho_LN = sigma^2/eps * d * u
  per format (inf when the model adds no epsilon); perceptrons: kappa(W_1), kappa(W_2).

Parts inside a loop (the paper's network scans over its layers) are recognised but have one
value per iteration: their entries are NaN and ``flags["values recorded: <part>"]`` is False;
for the paper's own network use ``boundlab.analysis.diagnostics``, which has every layer.

Under ``jit`` (``nnx.jit`` in a training step) nothing raises: ``flags["finite"]`` is False when
a value is NaN or inf.  The program is built once per (model structure, formats, options) and
shared by later calls.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from boundlab.runtime.compilation import memoised
from boundlab.runtime.x64 import require_x64
from boundlab.arithmetic import Emulated, Exact
from boundlab.condition.autodiff import componentwise
from boundlab.errors import ratio, relative_componentwise
from boundlab.formats import get_format
from boundlab import fragility
from boundlab.analysis.monitoring import WorstMetric, error_key
from boundlab.sensitivity.bound import first_order_program
from boundlab.structure.evaluate import external_inputs, replay, rounding_nodes, run
from boundlab.structure.find import prepare, trace
from boundlab.structure.parts import data_dependent, is_data, part_nodes

DEFAULT_FORMATS = ("bf16", "fp16")


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["error_componentwise", "error_normwise", "share", "condition", "closed_form", "baek"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class PartDiagnostics:
    """One part.  error_componentwise / error_normwise: format -> scalar (measured, at the part's
    result); share: format -> the part's terms of the first-order bound summed over the output
    entries; condition: kappa (jacfwd); closed_form: the paper's closed form of the same
    condition number where the part has the paper's form (an RMS norm without epsilon: Lemma 3.6's
    kappa_cc, equal to ``condition``; a layer norm without epsilon: Lemma 3.8's bound on
    kappa_cc, never below it; maximum over tokens), NaN elsewhere; baek: name -> scalar."""

    error_componentwise: dict
    error_normwise: dict
    share: dict
    condition: jax.Array
    closed_form: jax.Array
    baek: dict


@dataclasses.dataclass(frozen=True)
class OutputDiagnostics:
    """The model output under one format: measured componentwise and normwise errors against the
    exact run; with first-order bounds, ``bound`` (summed over the output's entries),
    ``bound_normwise`` (||bound||_2 / ||y||_2) and ``other`` (the bound's share outside every
    part), else None."""

    error_componentwise: jax.Array
    error_normwise: jax.Array
    bound: jax.Array | None
    bound_normwise: jax.Array | None
    other: jax.Array | None


@functools.partial(jax.tree_util.register_dataclass, data_fields=["parts", "output", "flags", "paper"],
                   meta_fields=["structure", "formats", "sites"])
@dataclasses.dataclass(frozen=True)
class ModelDiagnostics:
    """``parts``: part name -> ``PartDiagnostics``; ``output``: the model output's measured
    errors and first-order bounds per format ("error_componentwise/<f>", "error_normwise/<f>",
    "bound/<f>": the first-order bound summed over entries, "bound_normwise/<f>":
    ||bound||_2 / ||y||_2, "other/<f>": the bound's share outside every part); ``flags``: name ->
    bool; ``paper``: for the paper's own network (``boundlab.models.Transformer``), its
    ``boundlab.analysis.Diagnostics`` (every layer: Theorem 4.30's factors, Baek's diagnostics), else
    None; ``structure``: the ``boundlab.structure.Structure``; ``formats``; ``sites``: per
    format, the first-order sites' labels (for ``ranking``)."""

    parts: dict
    output: dict
    flags: dict
    paper: object
    structure: object
    formats: tuple
    sites: tuple

    def at_output(self, fmt: str) -> OutputDiagnostics:
        """The output's errors and bounds under ``fmt`` (one of ``formats``) as a typed record."""
        if fmt not in self.formats:
            raise KeyError(f"{fmt!r} is not among the diagnosed formats {self.formats}")
        get = self.output.get
        return OutputDiagnostics(self.output[error_key(fmt, "componentwise")], self.output[error_key(fmt)],
                                 get(f"bound/{fmt}"), get(f"bound_normwise/{fmt}"), get(f"other/{fmt}"))

    def ranking(self, fmt: str, top: int = 10) -> list:
        """The parts and "other" by their share of the first-order bound under ``fmt``, largest
        first: (name, share, fraction of the bound)."""
        output = self.at_output(fmt)
        shares = {name: float(p.share[fmt]) for name, p in self.parts.items()}
        shares["other"] = float(output.other)
        total = float(output.bound)
        order = sorted(shares.items(), key=lambda item: -item[1])
        return [(name, value, value / total if total else float("nan")) for name, value in order[:top]]

    def values(self) -> dict:
        """Every scalar by a flat name: "<part>/<quantity>" and "output/<quantity>" (arrays)."""
        out = {f"output/{k}": v for k, v in self.output.items()}
        for name, part in self.parts.items():
            for f in self.formats:
                out[f"{name}/error_componentwise/{f}"] = part.error_componentwise[f]
                out[f"{name}/error_normwise/{f}"] = part.error_normwise[f]
                out[f"{name}/share/{f}"] = part.share[f]
            out[f"{name}/condition"] = part.condition
            out[f"{name}/closed_form"] = part.closed_form
            out.update({f"{name}/{k}": v for k, v in part.baek.items()})
        return out

    def report_columns(self) -> list[str]:
        """The columns of ``table()`` a report shows, in its order: the part, its kind and layer, its
        condition number, the normwise error and the share of the bound per format, then the
        closed form and Baek's diagnostics (the componentwise errors stay in the CSV)."""
        if not self.structure.parts:
            return []
        shown = [error_key(f) for f in self.formats] + [f"share/{f}" for f in self.formats]
        baek = {k for part in self.parts.values() for k in part.baek}
        return ["part", "kind", "layer", "condition"] + shown + sorted(baek | {"closed_form"})

    def table(self) -> list[dict]:
        """One row per part (plain Python numbers), in program order: for printing or a report."""
        rows = []
        for part in self.structure.parts:
            result = self.parts[part.name]
            row = {"part": part.name, "kind": part.kind, "layer": part.layer, "condition": float(result.condition),
                   "closed_form": float(result.closed_form)}
            for f in self.formats:
                row[error_key(f, "componentwise")] = float(result.error_componentwise[f])
                row[error_key(f)] = float(result.error_normwise[f])
                row[f"share/{f}"] = float(result.share[f])
            row.update({k: float(v) for k, v in result.baek.items()})
            rows.append(row)
        return rows


def model_diagnostics(model, *args, formats=DEFAULT_FORMATS, first_order: bool = True, condition: bool = True,
                      lumped: bool = True, weights: tuple = (), chunk: int = 128) -> ModelDiagnostics:
    """Every diagnostic of ``model(*args)`` part by part (see the module docstring).

    Args:
      model: a Flax NNX module, or a JAX function (then ``weights`` names the positions of its
        weights among ``args``; every other argument is data).
      args: the batch, as the model takes it (``model_diagnostics(encoder, ids, valid)``).
      formats: names of the emulated formats (``get_format``).
      first_order: compute the first-order bound and its shares (one VJP per output entry).
      condition: compute the parts' condition numbers (a Jacobian per part).
      lumped: the first-order bound with one site per dot product and sum (Lemma 4.3's constant;
        never below the detailed bound, much cheaper to compile); False: every product and
        partial sum its own site.

    Needs ``jax_enable_x64``.  Works under ``jit``/``nnx.jit``.

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> jax.config.update("jax_enable_x64", True)
    >>> class Norm(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.ln = nnx.LayerNorm(4, epsilon=1e-5, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.ln(x)
    >>> x = jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4)
    >>> result = model_diagnostics(Norm(nnx.Rngs(0)), x, formats=("bf16",))
    >>> list(result.parts)
    ['ln:layer_norm']
    >>> round(float(result.parts["ln:layer_norm"].error_normwise["bf16"]), 2)  # 13 u: Flax's fast variance
    0.05

    (Flax computes the variance as mean(x^2) - mean(x)^2, which cancels for the rows 4..7 and
    8..11: in bf16 most digits of the variance are lost.)
    """
    require_x64("boundlab.analysis.model_diagnostics (the exact evaluation is float64)")
    formats = tuple(formats)
    for name in formats:
        get_format(name)
    if not args:
        raise TypeError("model_diagnostics(model, *args): give the batch the model is called on")
    fn, graphdefs, states, types, shifted = prepare(model, args, weights)
    _check_call(fn, graphdefs, states, args)
    program = _program(fn, formats, first_order, condition, lumped, shifted, chunk)
    result = program(graphdefs, types, states)
    from boundlab.models.paper.module import Transformer

    if isinstance(model, Transformer):
        from boundlab.analysis.monitoring import diagnostics

        result = dataclasses.replace(result, paper=diagnostics(model, *args, formats=formats))
    return result


def _check_call(fn, graphdefs, states, args):
    """One-line errors for a call that fails or has nothing to diagnose."""
    from boundlab.emulation.api import merged

    shapes = ", ".join(str(tuple(jnp.shape(a))) for a in jax.tree.leaves(args))
    try:
        out = jax.eval_shape(merged(fn, graphdefs), *states)
    except Exception as error:  # the model's own message, on one line, after what was passed
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"model(x) failed for x of shape {shapes}: {first}") from error
    dtypes = [leaf.dtype for leaf in jax.tree.leaves(out)]
    if not any(jnp.issubdtype(dtype, jnp.floating) for dtype in dtypes):
        found = ", ".join(str(d) for d in dtypes) or "nothing"
        raise ValueError(f"model(x) returned {found}: no floating-point output to diagnose")


def first_order_coefficient(model, *args, part: str | None = None, chunk: int = 128) -> jax.Array:
    """log10 C of ``||y^ - y||_1 <= C u ||y||_1 + O(u^2)`` for ``model(*args)`` (see
    ``boundlab.training.bound_penalty``); ``part``: only the roundings of that part.  Differentiable."""
    require_x64("boundlab.training.bound_penalty (the exact evaluation is float64)")
    fn, graphdefs, states, types, _ = prepare(model, args)
    return _coefficient_program(fn, part, chunk)(graphdefs, types, states)


@memoised
def _coefficient_program(fn, part, chunk):
    def compute(graphdefs, types, states):
        result = first_order_program(fn, Exact(), None, 0.99, chunk, True)(graphdefs, states)
        y = _flat(jax.tree.leaves(result.value))
        per_site = result.site_totals()
        if part is None:
            total = jnp.sum(per_site)
        else:
            traced = trace(fn, graphdefs, states, dict(types))
            names = [p.name for p in traced.structure.parts]
            if part not in names:
                raise ValueError(f"the model has no part {part!r}; its parts: {names}")
            shares = _split(per_site, result.sites, traced.program, _owners(traced.program, traced.structure),
                            traced.structure)
            total = shares[part]
        u = Exact().fmt.unit_roundoff
        return jnp.log10(total / (u * jnp.sum(jnp.abs(y))))

    return jax.jit(compute, static_argnums=(0, 1))


@memoised
def _program(fn, formats, with_first_order, with_condition, lumped, weights, chunk):
    def compute(graphdefs, types, states):
        traced = trace(fn, graphdefs, states, dict(types), weights)
        program, structure = traced.program, traced.structure
        data = data_dependent(program, traced.data)
        exact = run(traced.closed, program, traced.leaves, Exact())
        emulated = {f: run(traced.closed, program, traced.leaves, Emulated(f)) for f in formats}
        y = _flat(exact.outputs)
        finite = [jnp.all(jnp.isfinite(v)) for v in [y] + [_flat(e.outputs) for e in emulated.values()]]
        flags = {"finite": jnp.all(jnp.stack(finite))}
        output = {}
        for f in formats:
            y_hat = _flat(emulated[f].outputs)
            output[error_key(f, "componentwise")] = relative_componentwise(y_hat, y)
            output[error_key(f)] = _normwise(y_hat, y)
        owners = _owners(program, structure)
        shares, sites = {}, []
        if with_first_order:
            for f in formats:
                result = first_order_program(fn, Emulated(f), None, 0.99, chunk, lumped)(graphdefs, states)
                per_site = result.site_totals()
                sites.append(tuple(site.label() for site in result.sites))
                shares[f] = _split(per_site, result.sites, program, owners, structure)
                bound = _flat(jax.tree.leaves(result.bound))
                output[f"bound/{f}"] = jnp.sum(bound)
                output[f"bound_normwise/{f}"] = ratio(jnp.linalg.norm(bound), jnp.linalg.norm(_flat(result.value)))
                output[f"other/{f}"] = shares[f]["other"]
                flags[f"sites matched: {f}"] = jnp.array(shares[f]["matched"])
                flags[f"bound finite: {f}"] = jnp.all(jnp.isfinite(bound))
                # an overflowed value that matters (a masked score at -inf does not): no bound there
                flags[f"no overflow that matters: {f}"] = ~jnp.any(result.flags["overflow"])
        parts = {}
        for part in structure.parts:
            recorded = not part.in_loop
            flags[f"values recorded: {part.name}"] = jnp.array(recorded)
            nan = jnp.array(jnp.nan)
            if recorded:
                exit_value = program.nodes[part.exit].outputs[0]
                y_part = exact.value(exit_value)
                computed = {f: jnp.asarray(emulated[f].value(exit_value), y_part.dtype) for f in formats}  # exact widening
                errors_c = {f: relative_componentwise(computed[f], y_part) for f in formats}
                errors_n = {f: _normwise(computed[f], y_part) for f in formats}
                kappa = _condition(program, part, exact, data) if with_condition else nan
                closed = _closed_form(part, exact) if with_condition else nan
                baek = _baek(part, exact, formats, program)
            else:
                errors_c = {f: nan for f in formats}
                errors_n = dict(errors_c)
                kappa, closed, baek = nan, nan, _baek_nan(part, formats)
            share = {f: shares[f][part.name] if with_first_order else nan for f in formats}
            parts[part.name] = PartDiagnostics(errors_c, errors_n, share, kappa, closed, baek)
        return ModelDiagnostics(parts, output, flags, None, structure, formats, tuple(sites))

    return jax.jit(compute, static_argnums=(0, 1))


def _flat(values):
    leaves = jax.tree.leaves(values)
    return jnp.concatenate([jnp.ravel(jnp.asarray(v, jnp.float64)) for v in leaves]) if leaves else jnp.zeros(0)


def _normwise(approx, exact):
    approx, exact = jnp.asarray(approx, jnp.float64), jnp.asarray(exact, jnp.float64)
    return ratio(jnp.linalg.norm(jnp.ravel(approx - exact)), jnp.linalg.norm(jnp.ravel(exact)))


def _owners(program, structure) -> dict:
    """node index -> the name of the part whose operations include it."""
    owners = {}
    for part in structure.parts:
        for index in part_nodes(program, part):
            owners.setdefault(index, part.name)
    return owners


def _split(per_site, sites, program, owners, structure) -> dict:
    """The per-site first-order totals summed per part ("other": outside every part).  Sites are
    matched to the program's rounding nodes in order (checked by primitive and shape)."""
    nodes = rounding_nodes(program)
    matched = len(nodes) == len(sites) and all(
        program.nodes[i].primitive == site.primitive and tuple(program.nodes[i].eqn.outvars[0].aval.shape) == site.shape
        for i, site in zip(nodes, sites))
    totals = {part.name: jnp.zeros(()) for part in structure.parts}
    totals["other"] = jnp.zeros(())
    if not matched:
        nan = jnp.array(jnp.nan)
        return {**{name: nan for name in totals}, "matched": False}
    for k, index in enumerate(nodes):
        name = owners.get(index, "other")
        totals[name] = totals[name] + per_site[k]
    return {**totals, "matched": True}


def _condition(program, part, exact, data):
    nodes = part_nodes(program, part)
    exit_value = program.nodes[part.exit].outputs[0]
    variables = [i for i in external_inputs(program, nodes) if is_data(program, data, i) and _is_float(program, i)]
    if not variables:
        return jnp.array(jnp.nan)
    g = replay(program, nodes, exit_value, exact, variables)
    point = tuple(jnp.asarray(exact.value(i), jnp.float64) for i in variables)
    return componentwise(lambda xs: g(*xs), point).value


def _closed_form(part, exact):
    """The paper's closed-form kappa_cc of a norm without epsilon, maximum over tokens (NaN for
    other parts): Lemma 3.6 (RMS norm, exact) or Lemma 3.8's bound (layer norm)."""
    if part.kind not in ("layer_norm", "rms_norm") or part.detail("eps") != 0.0:
        return jnp.array(jnp.nan)
    from boundlab.condition import closed_forms

    rows = _rows(exact.value(part.value("input")), part.detail("axes"))
    if part.kind == "rms_norm":
        values = jax.vmap(lambda r: closed_forms.rms_norm(r).kappa_cc)(rows)
    else:
        values = jax.vmap(lambda r: closed_forms.layer_norm(r).kappa_cc_bound)(rows)
    return jnp.max(values)


def _rows(X, axes):
    """X (float64) with the axes ``axes`` moved last and flattened, every other axis flattened
    first: one row per token (a norm) or per query (a softmax)."""
    X = jnp.asarray(X, jnp.float64)
    return jnp.moveaxis(X, axes, range(-len(axes), 0)).reshape(-1, math.prod(X.shape[a] for a in axes))


def _is_float(program, ident):
    dtype = program.dtypes.get(ident)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def _matrices(value, dims, shape):
    """A dot_general operand as (batch, free, contracted) matrices."""
    contract, batch = dims
    free = [i for i in range(len(shape)) if i not in contract and i not in batch]
    moved = jnp.transpose(value, list(batch) + free + list(contract))
    size = lambda axes: math.prod(shape[i] for i in axes)  # noqa: E731
    return moved.reshape(size(batch), size(free), size(contract))


def _baek(part, exact, formats, program):
    """Baek's diagnostics of a part, by ``boundlab.fragility``'s definitions, applied per head
    and sample (the maximum) to the exact values the part was recognised by."""
    value = lambda role: jnp.asarray(exact.value(part.value(role)), jnp.float64)  # noqa: E731
    if part.kind == "attention":
        node = program.nodes[part.exit]
        score_node = program.nodes[min(part.entry)]
        (lc, rc), (lb, rb) = score_node.eqn.params["dimension_numbers"]
        Q = _matrices(value("queries"), (lc, lb), program.shapes[part.value("queries")])
        K = _matrices(value("keys"), (rc, rb), program.shapes[part.value("keys")])
        S = jnp.einsum("bic,bjc->bij", Q, K)
        norm2 = jax.vmap(fragility.spectral_norm)
        kappa_score = jnp.max(ratio(norm2(Q) * norm2(K), norm2(S)))  # scale-free: no 1/sqrt(d_h)
        axes = part.detail("softmax_axes")
        p = value("probabilities")
        rows_p = _rows(p, axes)
        rows_s = jnp.where(rows_p > 0, _rows(jnp.broadcast_to(value("scores"), p.shape), axes), 0.0)
        kappa_softmax = fragility.softmax_sensitivity(rows_s.T, rows_p.T)  # one column per query
        (vc_l, vc_r), (vb_l, vb_r) = node.eqn.params["dimension_numbers"]
        values_id = part.value("values")
        dims = (vc_l, vb_l) if node.inputs.index(values_id) == 0 else (vc_r, vb_r)
        V = _matrices(value("values"), dims, program.shapes[values_id])
        kappa_V = jnp.max(jax.vmap(fragility.matrix_condition)(V))
        return {"kappa_score": kappa_score, "kappa_softmax": kappa_softmax, "kappa_V": kappa_V}
    if part.kind in ("layer_norm", "rms_norm"):
        tokens = _rows(value("input"), part.detail("axes")).T  # (d, tokens): tokens as columns
        sigma = fragility.spread(tokens, "layer" if part.kind == "layer_norm" else "rms")
        eps, d = part.detail("eps"), tokens.shape[0]
        out = {"sigma_med": sigma, "C_LN": fragility.layer_norm_indicators(sigma, d, eps, 0.0)[0]}
        for f in formats:
            out[f"rho_LN/{f}"] = fragility.layer_norm_indicators(sigma, d, eps, get_format(f).unit_roundoff)[1]
        return out
    out = {}
    for k in (1, 2):
        if f"W{k}" in dict(part.values):
            W = value(f"W{k}")
            out[f"kappa_W{k}"] = fragility.matrix_condition(W.reshape(W.shape[0], -1) if W.ndim != 2 else W)
    return out


def _baek_nan(part, formats):
    nan = jnp.array(jnp.nan)
    if part.kind == "attention":
        return {"kappa_score": nan, "kappa_softmax": nan, "kappa_V": nan}
    if part.kind in ("layer_norm", "rms_norm"):
        return {"sigma_med": nan, "C_LN": nan, **{f"rho_LN/{f}": nan for f in formats}}
    return {k: nan for k in ("kappa_W1", "kappa_W2") if k in dict(part.values)}


class ModelMetric(WorstMetric):
    """An ``nnx.Metric`` keeping the worst value of every quantity of ``model_diagnostics`` over
    the batches it is shown (elementwise maximum; NaN propagates) and the AND of every flag.

    Built from one result (its names fix the metric's shape, so updates work under ``nnx.jit``):
    ``metric = ModelMetric(model_diagnostics(model, x0))``, then ``metric.update(diagnostics=r)``
    (other keyword arguments are ignored, so it sits in an ``nnx.MultiMetric`` beside
    ``Average("loss")``); ``compute()`` returns ``{name: value}`` (``ModelDiagnostics.values``
    names) with the flags under ``"flag/<name>"``.
    """

    def __init__(self, example: ModelDiagnostics, argname: str = "diagnostics"):
        super().__init__(tuple(example.values()), tuple(example.flags), argname)

    def update(self, **kwargs) -> None:
        result = self._argument(kwargs, "a boundlab.analysis.ModelDiagnostics")
        values = result.values()
        missing = [name for name in self.names if name not in values]
        if missing:
            raise ValueError(f"these diagnostics lack {missing[:3]}: evaluate them on the same model and options")
        self._record([values[name] for name in self.names], [result.flags[name] for name in self.flag_names])
