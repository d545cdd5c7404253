"""The paper's network as Flax NNX modules, diagnostics for training loops (the paper's network,
and any model part by part), a bound penalty."""

from boundlab.nn.monitoring import Diagnostics as Diagnostics
from boundlab.nn.monitoring import FragilityMetric as FragilityMetric
from boundlab.nn.monitoring import diagnose as diagnose
from boundlab.nn.monitoring import diagnostics as diagnostics
from boundlab.nn.encoder_module import Encoder as Encoder
from boundlab.nn.part_diagnostics import ModelDiagnostics as ModelDiagnostics
from boundlab.nn.part_diagnostics import ModelMetric as ModelMetric
from boundlab.nn.part_diagnostics import PartDiagnostics as PartDiagnostics
from boundlab.nn.part_diagnostics import model_diagnostics as model_diagnostics
from boundlab.nn.modules import Block as Block
from boundlab.nn.modules import SequenceClassifier as SequenceClassifier
from boundlab.nn.modules import Transformer as Transformer
from boundlab.nn.modules import from_params as from_params
from boundlab.nn.modules import to_params as to_params
from boundlab.nn.penalty import bound_penalty as bound_penalty
from boundlab.nn.report import write_report as write_report
from boundlab.nn.saving import load_state as load_state
from boundlab.nn.saving import save_state as save_state

__all__ = ["Block", "Diagnostics", "Encoder", "FragilityMetric", "ModelDiagnostics", "ModelMetric", "PartDiagnostics",
           "SequenceClassifier", "Transformer", "bound_penalty", "diagnose", "diagnostics", "from_params",
           "load_state", "model_diagnostics", "save_state", "to_params", "write_report"]
