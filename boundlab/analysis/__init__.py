"""The analysis engine.

* Any model, part by part: ``model_diagnostics(model, x)`` (``ModelDiagnostics``: every
  attention, norm, perceptron and residual addition found in the traced program, with its
  condition numbers, measured errors and first-order bounds per format), ``ModelMetric`` for
  training loops, and ``write_report`` (table, JSON, CSV, PNG);
* a language model's next-token errors against float64 (KL, top-1 agreement, perplexity) and the
  first step where a generation departs from the exact one: ``next_token_errors``,
  ``first_divergence`` (``language``);
* the outlier regimes of a real model: ``massive_activations``, ``sink_mass``, and the RMS norm's
  and the softmax's measured errors against their bounds there (``rms_norm_errors``,
  ``softmax_errors``; ``outliers``);
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
from boundlab.analysis.language import NextTokenErrors as NextTokenErrors
from boundlab.analysis.language import first_divergence as first_divergence
from boundlab.analysis.language import next_token_errors as next_token_errors
from boundlab.analysis.measurement import measure as measure
from boundlab.analysis.outliers import massive_activations as massive_activations
from boundlab.analysis.outliers import rms_norm_errors as rms_norm_errors
from boundlab.analysis.outliers import sink_mass as sink_mass
from boundlab.analysis.outliers import softmax_errors as softmax_errors
from boundlab.analysis.monitoring import Diagnostics as Diagnostics
from boundlab.analysis.monitoring import FragilityMetric as FragilityMetric
from boundlab.analysis.monitoring import diagnose as diagnose
from boundlab.analysis.monitoring import diagnostics as diagnostics
from boundlab.analysis.writer import write_report as write_report

__all__ = ["Analysis", "Diagnostics", "FragilityMetric", "ModelDiagnostics", "ModelMetric", "NextTokenErrors", "OutputDiagnostics",
           "PartDiagnostics", "analyze", "diagnose", "diagnostics", "first_divergence", "massive_activations", "measure",
           "model_diagnostics", "next_token_errors", "rms_norm_errors", "sink_mass", "softmax_errors", "write_report"]
