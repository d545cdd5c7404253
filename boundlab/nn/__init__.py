"""The paper's network as Flax NNX modules, diagnostics for training loops, a bound penalty."""

from boundlab.nn.modules import Block as Block
from boundlab.nn.modules import SequenceClassifier as SequenceClassifier
from boundlab.nn.modules import Transformer as Transformer
from boundlab.nn.modules import from_params as from_params
from boundlab.nn.modules import to_params as to_params

__all__ = ["Block", "SequenceClassifier", "Transformer", "from_params", "to_params"]
