"""The parts of any transformer (attention, norms, perceptrons, residual additions, layers),
recognised in its traced program; see ``boundlab.structure.parts``."""

from boundlab.structure.find import find_structure as find_structure
from boundlab.structure.parts import ModuleCall as ModuleCall
from boundlab.structure.parts import Part as Part
from boundlab.structure.parts import Structure as Structure

__all__ = ["ModuleCall", "Part", "Structure", "find_structure"]
