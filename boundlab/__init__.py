"""boundlab: round-off analysis of transformers in JAX.

Formats and bit-exact rounding (this release), then the paper's transformer under exact and
emulated arithmetic, condition numbers and the Section 4 bounds.
"""

from importlib.metadata import PackageNotFoundError, version

from boundlab.formats import Format as Format
from boundlab.formats import digits as digits
from boundlab.formats import gamma as gamma
from boundlab.formats import get_format as get_format
from boundlab.rounding import MODES as MODES
from boundlab.rounding import round_to as round_to

try:
    __version__ = version("boundlab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Format", "MODES", "digits", "gamma", "get_format", "round_to", "__version__"]
