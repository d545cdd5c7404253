"""The paper's transformer (eqs. 1-10) as pure functions of explicit parameters.

Every function takes an arithmetic (``boundlab.Exact()`` or ``boundlab.Emulated(...)``); the
order of operations is documented in ``boundlab.transformer.layers``.
"""

from boundlab.transformer.comparison import Comparison as Comparison
from boundlab.transformer.comparison import compare as compare
from boundlab.transformer.inits import SCHEMES as SCHEMES
from boundlab.transformer.inits import init as init
from boundlab.transformer.layers import attention as attention
from boundlab.transformer.layers import causal_mask as causal_mask
from boundlab.transformer.layers import centring as centring
from boundlab.transformer.layers import layer_norm as layer_norm
from boundlab.transformer.layers import perceptron as perceptron
from boundlab.transformer.layers import rms_norm as rms_norm
from boundlab.transformer.layers import scores as scores
from boundlab.transformer.layers import softmax as softmax
from boundlab.transformer.network import PARAM_NAMES as PARAM_NAMES
from boundlab.transformer.network import Intermediates as Intermediates
from boundlab.transformer.network import Params as Params
from boundlab.transformer.network import block as block
from boundlab.transformer.network import forward as forward
from boundlab.transformer.network import validate as validate

__all__ = ["PARAM_NAMES", "SCHEMES", "Comparison", "Intermediates", "compare", "Params", "attention", "block", "causal_mask", "centring",
           "forward", "init", "layer_norm", "perceptron", "rms_norm", "scores", "softmax", "validate"]
