import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def synthetic_views(n_cells, n_niches, n_cell_types, n_genes, seed, n_neighbors, n_comps):
    """Synthetic niche cells with the three default views computed."""
    import scniche_jax as sj

    adata = sj.datasets.synthetic(n_cells, n_niches=n_niches, n_cell_types=n_cell_types, n_genes=n_genes, seed=seed)
    sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=n_neighbors, verbose=False)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=n_comps, n_neighbors=n_neighbors, verbose=False)
    return adata
