"""Grids a quantizer can use, registered by name in :data:`GRIDS`; a new grid is one module here plus its import."""

from .base import GRIDS, Grid, Params
from .uniform import UniformGrid
from .affine import AffineGrid
from .symmetric import SymmetricGrid
from .binary import BinaryGrid
from .lsq import LSQGrid
from .lsqplus import LSQPlusGrid, LSQPlusIntGrid
from .pams import PAMSGrid
from .dorefa import DoReFaGrid
from .dls import DLSGrid
from .rfa import NU2UGrid, RFAGrid
from .rlq import LSQTanhGrid, RLQGrid
from .rbd import RBDActivationGrid, RBDGrid

__all__ = ["GRIDS", "AffineGrid", "BinaryGrid", "DLSGrid", "DoReFaGrid", "Grid", "LSQGrid", "LSQPlusGrid",
           "LSQPlusIntGrid", "LSQTanhGrid", "NU2UGrid", "PAMSGrid", "Params", "RBDActivationGrid", "RBDGrid",
           "RFAGrid", "RLQGrid", "SymmetricGrid", "UniformGrid"]
