"""Low-precision training, emulated: a training step whose forward pass, backward pass, optimizer
and weight update each round as a ``Recipe`` says (``boundlab.training.step``)."""

from boundlab.training.gradients import check_gradient as check_gradient
from boundlab.training.penalty import bound_penalty as bound_penalty
from boundlab.training.recipes import GEMMS as GEMMS
from boundlab.training.recipes import Mixed as Mixed
from boundlab.training.recipes import RECIPES as RECIPES
from boundlab.training.recipes import Recipe as Recipe
from boundlab.training.recipes import get_recipe as get_recipe
from boundlab.training.step import StepInfo as StepInfo
from boundlab.training.step import TrainState as TrainState
from boundlab.training.step import init_state as init_state
from boundlab.training.step import make_step as make_step

__all__ = ["GEMMS", "Mixed", "RECIPES", "Recipe", "StepInfo", "TrainState", "bound_penalty", "check_gradient", "get_recipe", "init_state", "make_step"]
