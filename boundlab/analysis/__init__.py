"""One case, every quantity side by side: ``analyze`` and the jit-friendly ``measure``."""

from boundlab.analysis.measurement import measure as measure
from boundlab.analysis.report import Analysis as Analysis
from boundlab.analysis.report import analyze as analyze

__all__ = ["Analysis", "analyze", "measure"]
