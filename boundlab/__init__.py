"""boundlab: round-off analysis of transformers in JAX.

Formats and bit-exact rounding, arithmetic policies (exact float64 and Model 4.1 emulation),
the paper's transformer (eqs. 1-10), relative errors, condition numbers (Section 3), the
Section 4 bounds, and ``analyze`` (one case, every quantity side by side); for any JAX function,
``emulate`` (Model 4.1 by a jaxpr interpreter) and ``first_order`` (the autodiff first-order
error bound, deterministic and probabilistic).
"""

from importlib.metadata import PackageNotFoundError, version

from boundlab import bounds as bounds
from boundlab import condition as condition
from boundlab import errors as errors
from boundlab.models import paper as transformer  # the paper's network, as before: boundlab.transformer.forward, ...
from boundlab.analysis import Analysis as Analysis
from boundlab.analysis import analyze as analyze
from boundlab.arithmetic import ACCUMULATIONS as ACCUMULATIONS
from boundlab.arithmetic import Emulated as Emulated
from boundlab.arithmetic import Exact as Exact
from boundlab.emulation import emulate as emulate
from boundlab.formats import Format as Format
from boundlab.formats import digits as digits
from boundlab.formats import gamma as gamma
from boundlab.formats import get_format as get_format
from boundlab.models.paper.interchange import load_case as load_case
from boundlab.sensitivity import first_order as first_order
from boundlab.models.paper.interchange import save_case as save_case
from boundlab.rounding import MODES as MODES
from boundlab.rounding import round_to as round_to

try:
    __version__ = version("boundlab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["ACCUMULATIONS", "Analysis", "Emulated", "Exact", "Format", "MODES", "analyze", "bounds", "condition", "digits",
           "emulate", "errors", "first_order", "gamma", "get_format", "load_case", "round_to", "save_case", "transformer", "__version__"]
