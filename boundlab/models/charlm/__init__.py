"""The small character-level causal language model of the training studies: pure functions of a
parameter pytree (``network``: the model, its corpus and Baek's diagnostics of it) and the NNX
module ``CharLM`` (``module``), bit for bit the pure function."""

from boundlab.models.charlm.module import CharLM as CharLM
from boundlab.models.charlm.network import SOURCES as SOURCES
from boundlab.models.charlm.network import CharLMConfig as CharLMConfig
from boundlab.models.charlm.network import Vocabulary as Vocabulary
from boundlab.models.charlm.network import corpus as corpus
from boundlab.models.charlm.network import diagnostics as diagnostics
from boundlab.models.charlm.network import epsilon_policy as epsilon_policy
from boundlab.models.charlm.network import forward as forward
from boundlab.models.charlm.network import init_params as init_params
from boundlab.models.charlm.network import loss as loss
from boundlab.models.charlm.network import windows as windows

__all__ = ["CharLM", "CharLMConfig", "SOURCES", "Vocabulary", "corpus", "diagnostics", "epsilon_policy", "forward",
           "init_params", "loss", "windows"]
