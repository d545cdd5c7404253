"""Benchmarks behind ``boundlab bench``, one module per subject: times and ratios measured in one
process (speed is never asserted in a test).  The numbers, with machine and date, are on the
documentation's benchmarks page."""

from boundlab.bench.any_model import diagnostics_benchmark as diagnostics_benchmark
from boundlab.bench.any_model import emulate_benchmark as emulate_benchmark
from boundlab.bench.any_model import model_benchmark as model_benchmark
from boundlab.bench.any_model import two_block_model as two_block_model
from boundlab.bench.any_model import user_model_rows as user_model_rows
from boundlab.bench.decoder import decoder_benchmark as decoder_benchmark
from boundlab.bench.hardware_units import hardware_benchmark as hardware_benchmark
from boundlab.bench.pallas import kernels_benchmark as kernels_benchmark
from boundlab.bench.paper_network import analyze_benchmark as analyze_benchmark
from boundlab.bench.paper_network import figure1_benchmark as figure1_benchmark
from boundlab.bench.paper_network import forward_benchmark as forward_benchmark
from boundlab.bench.paper_network import stochastic_benchmark as stochastic_benchmark
from boundlab.bench.paper_network import theorem_benchmark as theorem_benchmark
from boundlab.bench.rounding_speed import rounding_benchmark as rounding_benchmark
from boundlab.bench.soak import resident_bytes as resident_bytes
from boundlab.bench.soak import soak_benchmark as soak_benchmark
from boundlab.bench.timing import Timing as Timing
from boundlab.bench.timing import time_call as time_call
from boundlab.bench.training_steps import training_benchmark as training_benchmark

__all__ = ["Timing", "analyze_benchmark", "decoder_benchmark", "diagnostics_benchmark", "emulate_benchmark", "figure1_benchmark",
           "forward_benchmark", "hardware_benchmark", "kernels_benchmark", "model_benchmark", "resident_bytes",
           "rounding_benchmark", "soak_benchmark", "stochastic_benchmark", "theorem_benchmark", "time_call",
           "training_benchmark", "two_block_model", "user_model_rows"]
