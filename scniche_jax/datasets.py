"""Datasets: the bundled osmFISH cortex and a labelled synthetic niche simulator."""
from __future__ import annotations

from importlib import resources

import anndata as ad
import numpy as np
import pandas as pd


def osmfish() -> ad.AnnData:
    """osmFISH, mouse somatosensory cortex: 4,839 cells × 33 genes, 11 labelled regions.

    Codeluppi et al., *Spatial organization of the somatosensory cortex revealed by
    osmFISH*, Nat Methods 15:932–935 (2018), doi:10.1038/s41592-018-0175-z; data released by
    the Linnarsson lab, taken from the Giotto datasets repository (RubD/spatial-datasets).
    Cells whose region or cluster was "Excluded" are dropped. ``X`` holds raw molecule
    counts (normalise and log1p them), ``obs['Cell_type']`` the 31 original clusters,
    ``obs['Niche']`` the 11 anatomical regions, ``obsm['spatial']`` pixel coordinates;
    ``uns['source']`` carries the full provenance. Cite the paper when you use it.

    Returns
    -------
    anndata.AnnData
        A new AnnData read from the copy carried inside the package.

    Examples
    --------
    >>> import numpy as np
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.osmfish()
    >>> adata.shape
    (4839, 33)
    >>> adata.X = np.log1p(adata.X / adata.X.sum(1, keepdims=True) * 1e4)   # normalise + log1p
    """
    with resources.as_file(resources.files("scniche_jax") / "data" / "osmfish_cortex.h5ad") as path:
        return ad.read_h5ad(path)


def synthetic(n_cells: int = 1000, n_niches: int = 5, n_cell_types: int = 10, n_genes: int = 30,
              seed: int = 0) -> ad.AnnData:
    """Cells on a square whose niche (a Voronoi region) sets their cell-type mix.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_niches
        Number of spatial niches (``obs['Niche']``).
    n_cell_types
        Number of cell types (``obs['Cell_type']``).
    n_genes
        Genes; each cell type has its own mean profile, counts are Poisson and ``X`` holds ``log1p``
        counts (float32).
    seed
        Numpy seed.

    Returns
    -------
    anndata.AnnData
        AnnData with ``X``, ``obs['Cell_type']``, ``obs['Niche']`` and ``obsm['spatial']``.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> adata = sj.datasets.synthetic(n_cells=500, n_niches=4, seed=0)
    >>> adata.obs["Niche"].nunique(), adata.obsm["spatial"].shape
    (4, (500, 2))
    """
    rng = np.random.default_rng(seed)
    side = np.sqrt(n_cells) * 10.0
    spatial = rng.uniform(0, side, size=(n_cells, 2))
    centres = rng.uniform(0, side, size=(n_niches, 2))
    niche = np.argmin(((spatial[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    mixes = rng.dirichlet(np.full(n_cell_types, 0.3), size=n_niches)
    cdf = np.cumsum(mixes, axis=1)
    cell_type = np.minimum((rng.random(n_cells)[:, None] > cdf[niche]).sum(axis=1), n_cell_types - 1)
    means = rng.gamma(2.0, 1.0, size=(n_cell_types, n_genes)) * rng.uniform(0.2, 3.0, size=(n_cell_types, 1))
    counts = rng.poisson(means[cell_type]).astype(np.float32)
    obs = pd.DataFrame({
        "Cell_type": pd.Categorical([f"CT{t}" for t in cell_type], categories=[f"CT{t}" for t in range(n_cell_types)]),
        "Niche": pd.Categorical([f"N{k}" for k in niche], categories=[f"N{k}" for k in range(n_niches)]),
    }, index=[f"cell{i}" for i in range(n_cells)])
    adata = ad.AnnData(X=np.log1p(counts), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.obsm["spatial"] = spatial
    return adata
