"""Every model family boundlab analyses, each as pure functions and as Flax NNX modules that are
bit for bit the pure functions, built from the parts in ``boundlab.models.blocks``:

* ``paper``: the paper's pre-norm single-head causal network (eqs. 1-10) and its NNX twin
  (``Transformer``, ``Block``, ``SequenceClassifier``; ``to_params``/``from_params``);
* ``encoder``: the general encoder family (BERT/MiniLM, GPT-2 style), ``Encoder``;
* ``charlm``: the small character-level causal language model of the training studies;
* real pretrained weights (behind the ``models`` extra): ``load("minilm")`` gives
  sentence-transformers' all-MiniLM-L6-v2 as an ``EncoderConfig`` and a parameter pytree for
  ``boundlab.models.encoder``; ``tokenize`` turns sentences into padded token ids;
  ``sentences()`` the sentences shipped with boundlab for its studies;
* ``save_state``/``load_state``: a model's weights in a plain ``.npz``.
"""

from boundlab.models import blocks as blocks
from boundlab.models import charlm as charlm
from boundlab.models import encoder as encoder
from boundlab.models import paper as paper
from boundlab.models.encoder import Encoder as Encoder
from boundlab.models.minilm import INSTALL_HINT as INSTALL_HINT
from boundlab.models.minilm import MODELS as MODELS
from boundlab.models.minilm import ExtraMissing as ExtraMissing
from boundlab.models.minilm import Model as Model
from boundlab.models.minilm import available as available
from boundlab.models.minilm import load as load
from boundlab.models.minilm import sentences as sentences
from boundlab.models.minilm import tokenize as tokenize
from boundlab.models.paper.module import Block as Block
from boundlab.models.paper.module import SequenceClassifier as SequenceClassifier
from boundlab.models.paper.module import Transformer as Transformer
from boundlab.models.paper.module import from_params as from_params
from boundlab.models.paper.module import to_params as to_params
from boundlab.models.saving import load_state as load_state
from boundlab.models.saving import save_state as save_state

__all__ = ["Block", "Encoder", "ExtraMissing", "INSTALL_HINT", "MODELS", "Model", "SequenceClassifier", "Transformer",
           "available", "blocks", "charlm", "encoder", "from_params", "load", "load_state", "paper", "save_state", "sentences",
           "to_params", "tokenize"]
