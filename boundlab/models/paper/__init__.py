"""The paper's transformer (eqs. 1-10) as pure functions of explicit parameters.

Every function takes an arithmetic (``boundlab.Exact()`` or ``boundlab.Emulated(...)``); the
order of operations is documented in ``boundlab.models.blocks``.
"""

from boundlab.models.paper.comparison import Comparison as Comparison
from boundlab.models.paper.comparison import compare as compare
from boundlab.models.paper.inits import SCHEMES as SCHEMES
from boundlab.models.paper.inits import init as init
from boundlab.models.blocks import attention as attention
from boundlab.models.blocks import causal_mask as causal_mask
from boundlab.models.blocks import centring as centring
from boundlab.models.blocks import layer_norm as layer_norm
from boundlab.models.blocks import perceptron as perceptron
from boundlab.models.blocks import rms_norm as rms_norm
from boundlab.models.blocks import scores as scores
from boundlab.models.blocks import softmax as softmax
from boundlab.models.paper.network import PARAM_NAMES as PARAM_NAMES
from boundlab.models.paper.network import Intermediates as Intermediates
from boundlab.models.paper.network import Params as Params
from boundlab.models.paper.network import block as block
from boundlab.models.paper.network import forward as forward
from boundlab.models.paper.network import validate as validate

__all__ = ["PARAM_NAMES", "SCHEMES", "Comparison", "Intermediates", "compare", "Params", "attention", "block", "causal_mask", "centring",
           "forward", "init", "layer_norm", "perceptron", "rms_norm", "scores", "softmax", "validate"]
