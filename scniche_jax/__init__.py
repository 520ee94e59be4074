"""scniche-jax: scNiche (cell niches from single-cell spatial omics) in JAX."""
from . import datasets, pl, pp, tl
from .config import ScnicheConfig
from .fit import fit
from .trained_model import Model, load

__all__ = ["fit", "load", "Model", "ScnicheConfig", "pp", "tl", "pl", "datasets"]
__version__ = "0.1.0"
