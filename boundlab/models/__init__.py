"""Every model family boundlab analyses, each as pure functions and as Flax NNX modules that are
bit for bit the pure functions, built from the parts in ``boundlab.models.blocks``:

* ``paper``: the paper's pre-norm single-head causal network (eqs. 1-10) and its NNX twin
  (``Transformer``, ``Block``, ``SequenceClassifier``; ``to_params``/``from_params``);
* ``encoder``: the general encoder family (BERT/MiniLM, GPT-2 style), ``Encoder``;
* ``charlm``: the small character-level causal language model of the training studies;
* ``decoder``: the Llama architecture (RMS norm, rotary embeddings, grouped-query attention,
  SwiGLU), a KV cache in a chosen format and generation, ``Decoder``;
* real pretrained weights (behind the ``models`` extra; ``registry``): ``load("minilm")`` gives
  sentence-transformers' all-MiniLM-L6-v2 as an ``EncoderConfig`` and a parameter pytree for
  ``boundlab.models.encoder``; ``tokenize`` turns sentences into padded token ids;
  ``sentences()`` the sentences shipped with boundlab for its studies; ``load("smollm2")`` gives
  SmolLM2-135M-Instruct for ``boundlab.models.decoder`` (``smollm2.encode``/``decode``: its
  tokenizer);
* ``save_state``/``load_state``: a model's weights in a plain ``.npz``.
"""

from boundlab.models import blocks as blocks
from boundlab.models import charlm as charlm
from boundlab.models import decoder as decoder
from boundlab.models import encoder as encoder
from boundlab.models import paper as paper
from boundlab.models import smollm2 as smollm2
from boundlab.models.decoder import Decoder as Decoder
from boundlab.models.encoder import Encoder as Encoder
from boundlab.models.minilm import INSTALL_HINT as INSTALL_HINT
from boundlab.models.extras import ExtraMissing as ExtraMissing
from boundlab.models.minilm import Model as Model
from boundlab.models.minilm import sentences as sentences
from boundlab.models.minilm import tokenize as tokenize
from boundlab.models.paper.module import Block as Block
from boundlab.models.paper.module import SequenceClassifier as SequenceClassifier
from boundlab.models.paper.module import Transformer as Transformer
from boundlab.models.paper.module import from_params as from_params
from boundlab.models.paper.module import to_params as to_params
from boundlab.models.registry import MODELS as MODELS
from boundlab.models.registry import available as available
from boundlab.models.registry import install_hint as install_hint
from boundlab.models.registry import load as load
from boundlab.models.saving import load_state as load_state
from boundlab.models.saving import save_state as save_state

__all__ = ["Block", "Decoder", "Encoder", "ExtraMissing", "INSTALL_HINT", "MODELS", "Model", "SequenceClassifier", "Transformer",
           "available", "blocks", "charlm", "decoder", "encoder", "from_params", "install_hint", "load", "load_state", "paper", "save_state", "sentences",
           "smollm2", "to_params", "tokenize"]
