"""The paper's network as Flax NNX modules, diagnostics for training loops, a bound penalty."""

from boundlab.nn.monitoring import Diagnostics as Diagnostics
from boundlab.nn.monitoring import FragilityMetric as FragilityMetric
from boundlab.nn.monitoring import diagnose as diagnose
from boundlab.nn.monitoring import diagnostics as diagnostics
from boundlab.nn.modules import Block as Block
from boundlab.nn.modules import SequenceClassifier as SequenceClassifier
from boundlab.nn.modules import Transformer as Transformer
from boundlab.nn.modules import from_params as from_params
from boundlab.nn.modules import to_params as to_params
from boundlab.nn.penalty import bound_penalty as bound_penalty

__all__ = ["Block", "Diagnostics", "FragilityMetric", "SequenceClassifier", "Transformer", "bound_penalty", "diagnose",
           "diagnostics", "from_params", "to_params"]
