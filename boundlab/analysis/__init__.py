"""The analysis engine.

* Any model, part by part: ``model_diagnostics(model, x)`` (``ModelDiagnostics``: every
  attention, norm, perceptron and residual addition found in the traced program, with its
  condition numbers, measured errors and first-order bounds per format), ``ModelMetric`` for
  training loops, and ``write_report`` (table, JSON, CSV, PNG);
* the paper's network in a training loop: ``diagnostics``/``diagnose`` (Theorem 4.30's factors,
  Baek's fragility diagnostics), ``FragilityMetric``;
* the add-on for models of the paper's form: ``analyze`` (one case, every Section 4 statement
  beside the error it bounds) and the jit-friendly ``measure``.
"""

from boundlab.analysis.case import Analysis as Analysis
from boundlab.analysis.case import analyze as analyze
from boundlab.analysis.part_diagnostics import ModelDiagnostics as ModelDiagnostics
from boundlab.analysis.part_diagnostics import ModelMetric as ModelMetric
from boundlab.analysis.part_diagnostics import OutputDiagnostics as OutputDiagnostics
from boundlab.analysis.part_diagnostics import PartDiagnostics as PartDiagnostics
from boundlab.analysis.part_diagnostics import model_diagnostics as model_diagnostics
from boundlab.analysis.measurement import measure as measure
from boundlab.analysis.monitoring import Diagnostics as Diagnostics
from boundlab.analysis.monitoring import FragilityMetric as FragilityMetric
from boundlab.analysis.monitoring import diagnose as diagnose
from boundlab.analysis.monitoring import diagnostics as diagnostics
from boundlab.analysis.writer import write_report as write_report

__all__ = ["Analysis", "Diagnostics", "FragilityMetric", "ModelDiagnostics", "ModelMetric", "OutputDiagnostics", "PartDiagnostics", "analyze",
           "diagnose", "diagnostics", "measure", "model_diagnostics", "write_report"]
