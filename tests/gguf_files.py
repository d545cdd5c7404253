"""A small Llama-architecture GGUF written with ``gguf.GGUFWriter`` the way llama.cpp's converter
writes one (q/k rows permuted within each head, float32 tensors, a byte-level BPE vocabulary with
one merge), so that the loader's whole path and its refusals are tested without the 93 MB wheel."""

import jax
import numpy as np

TENSORS = {"attn_norm": "attn_norm", "Wq": "attn_q", "Wk": "attn_k", "Wv": "attn_v", "Wo": "attn_output",
           "ffn_norm": "ffn_norm", "W_gate": "ffn_gate", "W_up": "ffn_up", "W_down": "ffn_down"}


def permute(W, heads):
    """llama.cpp's conversion of a q or k matrix: row (d_h / 2) j + i of a head goes to row 2 i + j
    (written here from the converter's description, independently of ``smollm2.unpermute``)."""
    rows, d = W.shape
    return W.reshape(heads, 2, rows // heads // 2, d).transpose(0, 2, 1, 3).reshape(rows, d)


def write_llama(path, config, params, arch="llama", context=32, skip=()):
    """Write ``params`` of ``config`` (boundlab's decoder pytree, float32-representable) as a GGUF
    of architecture ``arch``, leaving out the tensors named in ``skip``."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.layers)
    writer.add_context_length(context)
    writer.add_embedding_length(config.d)
    writer.add_feed_forward_length(config.ffn)
    writer.add_head_count(config.heads)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_rope_freq_base(config.rope_base)
    writer.add_layer_norm_rms_eps(config.eps)
    writer.add_vocab_size(config.vocab)
    tokens = ["<|endoftext|>", "<s>", "</s>"] + [chr(ord("a") + i) for i in range(config.vocab - 4)] + ["ab"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(["a b"])
    writer.add_token_types([3, 3, 3] + [1] * (config.vocab - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    arrays = jax.tree.map(np.asarray, params)
    named = {"token_embd.weight": arrays["embed"], "output_norm.weight": arrays["final_norm"]}
    for layer in range(config.layers):
        for key, name in TENSORS.items():
            value = arrays["layers"][key][layer]
            if key in ("Wq", "Wk"):
                value = permute(value, config.heads if key == "Wq" else config.kv_heads)
            named[f"blk.{layer}.{name}.weight"] = value
    for name, value in named.items():
        if name not in skip:
            writer.add_tensor(name, value.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
