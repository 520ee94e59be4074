"""scniche-jax: scNiche (cell niches from single-cell spatial omics) in JAX."""
from . import datasets, pp, tl
from .config import ScnicheConfig
from .fit import Model, fit

__all__ = ["fit", "Model", "ScnicheConfig", "pp", "tl", "datasets"]
__version__ = "0.1.0"
