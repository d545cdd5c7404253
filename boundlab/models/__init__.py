"""Real pretrained transformers for boundlab's analyses (behind the ``models`` extra).

``load("minilm")`` gives sentence-transformers' all-MiniLM-L6-v2 as an ``EncoderConfig`` and a
parameter pytree for ``boundlab.nn.encoder``; ``tokenize`` turns sentences into padded token
ids; ``sentences()`` the sentences shipped with boundlab for its studies.
"""

from boundlab.models.minilm import INSTALL_HINT as INSTALL_HINT
from boundlab.models.minilm import MODELS as MODELS
from boundlab.models.minilm import ExtraMissing as ExtraMissing
from boundlab.models.minilm import Model as Model
from boundlab.models.minilm import available as available
from boundlab.models.minilm import load as load
from boundlab.models.minilm import sentences as sentences
from boundlab.models.minilm import tokenize as tokenize

__all__ = ["ExtraMissing", "INSTALL_HINT", "MODELS", "Model", "available", "load", "sentences", "tokenize"]
