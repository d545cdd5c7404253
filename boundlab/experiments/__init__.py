"""The paper's Figures 1-4 as sharded, chunked sweeps; PNG + CSV + summary.json for each."""

from boundlab.experiments.figures import CONFIGS as CONFIGS
from boundlab.experiments.figures import RUNNERS as RUNNERS
from boundlab.experiments.figures import Figure1 as Figure1
from boundlab.experiments.figures import Figure2 as Figure2
from boundlab.experiments.figures import Figure3 as Figure3
from boundlab.experiments.figures import Figure4 as Figure4
from boundlab.experiments.figures import FigureResult as FigureResult
from boundlab.experiments.figures import figure1 as figure1
from boundlab.experiments.figures import figure2 as figure2
from boundlab.experiments.figures import figure3 as figure3
from boundlab.experiments.figures import figure4 as figure4
from boundlab.experiments.per_layer import layer_errors as layer_errors
from boundlab.experiments.per_layer import post_norm_block as post_norm_block
from boundlab.experiments.figure_files import write as write
from boundlab.experiments.sweeps import sweep as sweep

__all__ = ["CONFIGS", "RUNNERS", "Figure1", "Figure2", "Figure3", "Figure4", "FigureResult", "figure1", "figure2",
           "figure3", "figure4", "layer_errors", "post_norm_block", "sweep", "write"]
