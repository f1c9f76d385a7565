"""Grids a quantizer can use, registered by name in :data:`GRIDS`; a new grid is one module here plus its import."""

from .base import GRIDS, Grid, Params
from .uniform import UniformGrid
from .affine import AffineGrid
from .symmetric import SymmetricGrid
from .binary import BinaryGrid
from .lsq import LSQGrid
from .lsqplus import LSQPlusGrid
from .pams import PAMSGrid
from .dorefa import DoReFaGrid

__all__ = ["GRIDS", "AffineGrid", "BinaryGrid", "DoReFaGrid", "Grid", "LSQGrid", "LSQPlusGrid", "PAMSGrid", "Params",
           "SymmetricGrid", "UniformGrid"]
