"""boundlab.structure: the parts of five kinds of model recognised from their traced programs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_encoder import IDS, VALID, random_params
from user_models import GPT, MLP, Mine

from boundlab.models import Transformer
from boundlab.models.encoder.network import EncoderConfig, encode
from boundlab.structure import find_structure
from boundlab.structure.scopes import module_paths

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py

X = jax.random.normal(jax.random.key(0), (2, 5, 8), jnp.float32)


def kinds_by_layer(structure):
    table = {}
    for part in structure.parts:
        table.setdefault(part.layer, []).append(part.kind)
    return table


def test_nnx_multi_head_attention_model():
    s = find_structure(Mine(rngs=nnx.Rngs(0)), X)
    assert kinds_by_layer(s) == {l: ["layer_norm", "attention", "layer_norm", "perceptron"] for l in (0, 1)}
    attention = s.of_kind("attention")[0]
    assert attention.module == "blocks.0.attn" and attention.detail("head_dim") == 4
    assert attention.detail("residual") is not None and not attention.in_loop
    assert [p.detail("eps") for p in s.of_kind("layer_norm")] == [float(np.float32(1e-6))] * 4  # as the program adds it
    assert [p.module for p in s.of_kind("layer_norm")[:2]] == ["blocks.0.ln1", "blocks.0.ln2"]
    assert s.of_kind("perceptron")[0].detail("activation") == "gelu (tanh)"  # jax.nn.gelu's default
    assert [(path, kind) for path, kind, _ in s.unrecognised] == [("head", "Linear")]
    assert "dot_general x1" in s.unrecognised[0][2]
    assert s.notes == ()


def test_gpt_style_model_from_plain_linear_maps():
    s = find_structure(GPT(rngs=nnx.Rngs(0)), X)
    assert kinds_by_layer(s) == {l: ["rms_norm", "attention", "rms_norm", "perceptron"] for l in (0, 1)}
    assert {p.detail("activation") for p in s.of_kind("perceptron")} == {"relu"}
    assert all(p.detail("residual") is not None for p in s.parts if p.kind in ("attention", "perceptron"))
    assert [p.module for p in s.of_kind("attention")] == ["blocks.0.attn", "blocks.1.attn"]
    assert s.unrecognised == ()
    abstract = find_structure(GPT(rngs=nnx.Rngs(0)), jax.ShapeDtypeStruct(X.shape, X.dtype))  # no data needed
    assert abstract.parts == s.parts


def test_model_without_attention_says_so():
    s = find_structure(MLP(rngs=nnx.Rngs(0)), jnp.ones((3, 8), jnp.float32))
    assert [(p.kind, p.detail("activation")) for p in s.parts] == [("perceptron", "tanh")]
    assert len(s.notes) == 1 and s.notes[0].startswith("no attention block")
    assert s.unrecognised == ()  # its two linear maps are the perceptron's


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_the_papers_network_is_found_inside_its_layer_loop(norm):
    s = find_structure(Transformer(4, 6, 3, norm=norm, rngs=nnx.Rngs(0)), jnp.ones((2, 4, 5)))
    assert [p.kind for p in s.parts] == [f"{norm}_norm", "attention", f"{norm}_norm", "perceptron"]
    assert all(p.in_loop for p in s.parts) and all(p.detail("eps", 0.0) == 0.0 for p in s.parts if "norm" in p.kind)
    assert s.of_kind("perceptron")[0].detail("activation") == "relu"


@pytest.mark.parametrize("config", [EncoderConfig(d=8, heads=2, ffn=12, layers=2),
                                    EncoderConfig(d=8, heads=2, ffn=12, layers=2, norm="pre", activation="gelu_tanh",
                                                  causal=True, eps=1e-5)])
def test_encoder_family(config):
    params = random_params(config)
    s = find_structure(lambda p, i, v: encode(p, i, v, config), params, IDS[0], VALID[0], weights=(0,))
    per_layer = [p.kind for p in s.parts if p.layer == 1]
    expected = ["attention", "layer_norm", "perceptron", "layer_norm"] if config.norm == "post" else \
        ["layer_norm", "attention", "layer_norm", "perceptron"]
    assert per_layer == expected and kinds_by_layer(s)[2] == expected
    assert {p.detail("eps") for p in s.parts if p.kind == "layer_norm"} == {config.eps}
    activation = {"gelu": "gelu (erf)", "gelu_tanh": "gelu (tanh)"}[config.activation]
    assert {p.detail("activation") for p in s.of_kind("perceptron")} == {activation}
    assert s.of_kind("attention")[0].detail("head_dim") == config.head_dim


def test_scopes_are_removed_after_tracing_and_other_instances_are_untouched():
    model = GPT(rngs=nnx.Rngs(0))
    before = {cls: cls.__dict__.get("__call__") for cls in {type(n) for _, n in module_paths(model).values()}}
    find_structure(model, X)
    assert {cls: cls.__dict__.get("__call__") for cls in before} == before
    other = GPT(rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(other(X), other(X))
    assert not any(e.primitive.name == "optimization_barrier" for e in jax.make_jaxpr(other)(X).jaxpr.eqns)


def test_a_model_that_raises_while_traced_leaves_no_scopes_behind():
    model = GPT(rngs=nnx.Rngs(0))
    with pytest.raises((TypeError, ValueError)):
        find_structure(model, X[..., :5])  # d = 5 is not the model's width
    classes = {type(n) for _, n in module_paths(model).values()}
    assert all(not hasattr(cls.__call__, "__wrapped__") for cls in classes)
