"""Configuration: four small frozen dataclasses, one per concept, each validating itself.

- :class:`ModelConfig`: what the model is (views, widths, graphs, dropout, variant, seed);
- :class:`ImprovedOptions`: the pieces of ``variant="improved"``, each its own option;
- :class:`OptimizerConfig`: Adam's learning rate and the LR plateau schedule;
- :class:`StoppingConfig`: how long to train and when to stop early;
- :class:`BatchConfig`: batches, precision, memory and devices (how the work is laid out).

Every field is validated once, in ``__post_init__``, with a message that names the fix. The
field names are the keyword names of :func:`scniche_jax.fit`, :class:`scniche_jax.Model` and
:meth:`scniche_jax.Model.train`; ``config.json`` and ``model.pt``'s ``config`` are derived
from them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import numpy as np

DEFAULT_VIEWS = ("X_cn_norm", "X_data", "X_data_nbr")
PRECISIONS = ("auto", "bf16", "fp32")
GRE_SEMANTICS = ("gpu", "cpu")
VARIANTS = ("reference", "improved")
CONSENSUS = ("gfn", "majority")
DEFAULT_RADIUS_WEIGHT = 3.0  # ImprovedOptions.concat_radius_composition (benchmarks/quality_lab/LOG.md)


def _int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _optional_int(value: Any, name: str, minimum: int = 1) -> Optional[int]:
    return None if value is None else _int(value, name, minimum)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def _widths(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        widths = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a list of layer widths, got {value!r}.") from None
    if not widths:
        raise ValueError(f"{name} needs at least one layer width.")
    return tuple(_int(w, f"every entry of {name}") for w in widths)


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists, nested configs as dicts)."""
        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v
        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The config from :meth:`to_dict`'s output; unknown entries are refused."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} entries {sorted(unknown)}")
        nested = getattr(cls, "_nested", {})
        return cls(**{k: nested[k].from_dict(v) if k in nested and isinstance(v, dict)
                      else tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def from_saved(cls, data: dict[str, Any]):
        """:meth:`from_dict` for a saved configuration: a field added after the save gets the
        value that reproduces what was saved (``_absent_in_old_saves``), not today's default."""
        data = {**getattr(cls, "_absent_in_old_saves", {}), **data}
        nested = getattr(cls, "_nested", {})
        data = {k: nested[k].from_saved(v) if k in nested and isinstance(v, dict) else v for k, v in data.items()}
        return cls.from_dict(data)


@dataclass(frozen=True)
class ImprovedOptions(_Serialisable):
    """The pieces of ``variant="improved"`` (defaults = the variant), each its own option.

    The reference model finds niches far from annotated tissue regions mostly because of what it
    is fed and how its embedding is read out; each piece below changes one of those:

    Attributes
    ----------
    scales
        Neighbourhood sizes (cells, itself included) of the multi-scale cell-type composition view,
        computed from ``obsm['spatial']`` and the cell-type column within each slice; ``()`` uses
        pp's ``X_cn_norm`` instead.
    standardise
        Z-score every view column (rare cell types weigh like abundant ones): the expression views
        within each slice (technical offsets between slices), the composition over all cells
        (fractions are comparable across slices already).
    composition_per_slice
        Z-score the composition within each slice too (off: slices covering different tissue
        proportions would be pulled apart).
    expression_views
        Also train on pp's ``X_data`` and ``X_data_nbr`` (standardised).
    consensus
        ``'majority'`` (edges shared by ``consensus_votes`` view graphs: never empty) or ``'gfn'``
        (the reference's frozen graph fusion network: empty from about 2,000 cells per graph).
    consensus_votes
        View graphs that must share an edge (capped at the number of views).
    concat_composition
        Weight of the standardised composition view appended to the standardised embedding in the
        readout (0: left out).
    concat_radius_composition
        Weight of the cell-type composition within fixed radii
        (:func:`~scniche_jax.improved.radius_composition`, one radius per entry of ``scales``),
        standardised, appended in the readout beside the k-nearest composition (0: left out; None,
        the default: 3 when ``scales`` is set, else 0). A configuration saved before this field
        existed loads with 0, the readout it was fitted with.
    embedding_weight
        Weight of the model's embedding in the readout, against the feature blocks above (1: the
        embedding's total variance equals one block at weight 1; 0: left out, the readout is the
        features alone). 0.5 by default: at 1 the embedding pulls layer borders off the features' on
        some tissues. A configuration saved before this field existed loads with 1.
    concat_expression
        Weight of the standardised neighbourhood expression (``X_data_nbr``) appended in the readout
        (0: left out).
    slice_readout
        Z-score the embedding within each slice in the readout, so that slice offsets do not become
        niches.
    smooth_k
        Spatial neighbours (itself included, within its slice) of the smoothing.
    smooth_steps
        Passes of the spatial mean over the readout; 0 turns smoothing off.
    spatial_prior
        Weight of the spatial Potts prior that ``tl.clustering`` should apply to this variant's
        embedding (0 turns it off); ``fit`` does not cluster, :attr:`clustering_kwargs` passes it on
        and the CLI does so for you.
    spatial_neighbors
        Spatial neighbours per cell (within its slice) of that prior.
    celltype_key
        ``obs`` column of cell types; None reads what pp recorded (``uns['CN_params']``) or finds
        the column matching ``uns['CN_order']``.
    sample_key
        ``obs`` column of slices; None reads what ``pp.process_multi_slices`` recorded (one slice
        otherwise).

    Examples
    --------
    >>> import scniche_jax as sj
    >>> options = sj.ImprovedOptions(embedding_weight=1.0)
    >>> model = sj.fit(adata, variant="improved", improved_options=options)  # doctest: +SKIP
    >>> sj.tl.clustering(adata, n_niches=8, **options.clustering_kwargs)  # doctest: +SKIP
    """

    scales: tuple[int, ...] = (20, 50, 100)
    standardise: bool = True
    composition_per_slice: bool = False
    expression_views: bool = True
    consensus: str = "majority"
    consensus_votes: int = 2
    concat_composition: float = 4.0
    concat_radius_composition: Optional[float] = None
    concat_expression: float = 4.0
    embedding_weight: float = 0.5
    slice_readout: bool = True
    smooth_k: int = 10
    smooth_steps: int = 1
    spatial_prior: float = 1.5
    spatial_neighbors: int = 75
    celltype_key: Optional[str] = None
    sample_key: Optional[str] = None

    # Saves from before these fields existed were read out without the radius block, the
    # embedding at full weight.
    _absent_in_old_saves = {"concat_radius_composition": 0.0, "embedding_weight": 1.0}

    def __post_init__(self):
        scales = (self.scales,) if isinstance(self.scales, (int, np.integer)) else self.scales
        try:
            scales = tuple(_int(k, "every entry of scales") for k in scales)
        except TypeError:
            raise ValueError(f"scales must be a list of neighbourhood sizes, got {self.scales!r}.") from None
        _set(self, "scales", scales)
        _set(self, "standardise", bool(self.standardise))
        _set(self, "composition_per_slice", bool(self.composition_per_slice))
        _set(self, "expression_views", bool(self.expression_views))
        if self.consensus not in CONSENSUS:
            raise ValueError(f"consensus must be one of {CONSENSUS}, got {self.consensus!r}.")
        _set(self, "consensus_votes", _int(self.consensus_votes, "consensus_votes"))
        if self.concat_radius_composition is None:  # the radii come from `scales`: none, no block
            _set(self, "concat_radius_composition", DEFAULT_RADIUS_WEIGHT if scales else 0.0)
        for name in ("concat_composition", "concat_radius_composition", "concat_expression", "embedding_weight"):
            weight = _number(getattr(self, name), name)
            if weight < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
            _set(self, name, weight)
        if self.concat_radius_composition > 0 and not scales:
            raise ValueError("concat_radius_composition needs the neighbourhood sizes of `scales` (one radius per "
                             "size); pass scales=(20, 50, 100) or concat_radius_composition=0.")
        if self.embedding_weight == 0 and not (self.concat_composition or self.concat_radius_composition
                                               or self.concat_expression):
            raise ValueError("embedding_weight=0 with every concat_* weight 0 leaves the readout empty; give the "
                             "embedding or one feature block a weight > 0.")
        _set(self, "slice_readout", bool(self.slice_readout))
        _set(self, "smooth_k", _int(self.smooth_k, "smooth_k"))
        _set(self, "smooth_steps", _int(self.smooth_steps, "smooth_steps", minimum=0))
        prior = _number(self.spatial_prior, "spatial_prior")
        if prior < 0:
            raise ValueError(f"spatial_prior must be >= 0 (0 turns the prior off), got {self.spatial_prior!r}.")
        _set(self, "spatial_prior", prior)
        _set(self, "spatial_neighbors", _int(self.spatial_neighbors, "spatial_neighbors"))
        for name in ("celltype_key", "sample_key"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"{name} must be an adata.obs column name or None, got {value!r}.")

    @property
    def clustering_kwargs(self) -> dict[str, Any]:
        """Keywords for ``tl.clustering`` on this variant's embedding (the spatial prior)."""
        return {"spatial_prior": self.spatial_prior, "spatial_neighbors": self.spatial_neighbors}

    @property
    def view_names(self) -> tuple[str, ...]:
        """Names of the views this variant trains on (the composition first)."""
        return ("X_ms_comp", "X_data_std", "X_data_nbr_std") if self.expression_views else ("X_ms_comp",)


@dataclass(frozen=True)
class ModelConfig(_Serialisable):
    """The model: its views, widths, graphs and randomness.

    Attributes
    ----------
    views
        ``obsm`` keys, one per view, in order.
    hidden_size_v
        View-encoder widths (reference default ``[10]``).
    hidden_size
        Shared-encoder widths; the last is the embedding width.
    n_neighbors
        kNN neighbours per cell in each view's feature graph (the reference's ``k_cutoff_graph``).
    mik
        Nearest neighbours per view used as positives of the mutual-information loss.
    dropout
        Dropout rate in fusion and decoder while training (the reference's 0.1).
    deterministic_embedding
        Embed with dropout off (True) or on, like the reference (False).
    gre_semantics
        Report ``loss_gre`` with R (``'gpu'``) or R + Rᵀ (``'cpu'``, the reference on a CPU);
        training is identical.
    variant
        ``'reference'``, the model as the reference computes it, or ``'improved'``
        (:class:`ImprovedOptions`; its views are computed from pp's output).
    improved_options
        The options of ``variant='improved'`` (None: the defaults); must be None for the reference.
    seed
        Seed of every random choice (initialisation, dropout, negatives, probes).

    Examples
    --------
    >>> import scniche_jax as sj
    >>> config = sj.ModelConfig(n_neighbors=15, seed=1)
    >>> config.latent_dim
    10
    >>> model = sj.Model(n_neighbors=15, seed=1)   # the same fields as keywords
    >>> model.config == config
    True
    """

    views: tuple[str, ...] = DEFAULT_VIEWS
    hidden_size_v: tuple[int, ...] = (10,)
    hidden_size: tuple[int, ...] = (32, 10)
    n_neighbors: int = 20
    mik: int = 5
    dropout: float = 0.1
    deterministic_embedding: bool = True
    gre_semantics: str = "gpu"
    variant: str = "reference"
    improved_options: Optional[ImprovedOptions] = None
    seed: int = 0

    _nested = {"improved_options": ImprovedOptions}

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}.")
        if self.variant == "improved":
            options = ImprovedOptions() if self.improved_options is None else self.improved_options
            if isinstance(options, dict):
                options = ImprovedOptions.from_dict(options)
            if not isinstance(options, ImprovedOptions):
                raise ValueError(f"improved_options must be an ImprovedOptions or None, got {self.improved_options!r}.")
            _set(self, "improved_options", options)
            if self.views in (DEFAULT_VIEWS, list(DEFAULT_VIEWS), None):
                _set(self, "views", options.view_names)
            elif tuple(self.views) != options.view_names:
                raise ValueError("variant='improved' computes its own views from what pp stored; leave views "
                                 f"unset (they are {list(options.view_names)}).")
        elif self.improved_options is not None:
            raise ValueError("improved_options=ImprovedOptions(...) only applies to variant='improved'; pass "
                             "variant='improved' or drop it.")
        views = (self.views,) if isinstance(self.views, str) else self.views
        try:
            views = tuple(views)
        except TypeError:
            raise ValueError(f"views must be a list of adata.obsm keys, got {self.views!r}.") from None
        if not views or not all(isinstance(v, str) and v for v in views):
            raise ValueError(f"views must name at least one adata.obsm key, got {self.views!r}.")
        if len(set(views)) != len(views):
            raise ValueError(f"views must be distinct, got {list(views)}.")
        _set(self, "views", views)
        _set(self, "hidden_size_v", _widths(self.hidden_size_v, "hidden_size_v"))
        _set(self, "hidden_size", _widths(self.hidden_size, "hidden_size"))
        _set(self, "n_neighbors", _int(self.n_neighbors, "n_neighbors"))
        _set(self, "mik", _int(self.mik, "mik"))
        if self.mik > self.n_neighbors + 1:
            raise ValueError(f"mik={self.mik} exceeds the n_neighbors + 1 = {self.n_neighbors + 1} kNN columns; "
                             f"choose mik <= {self.n_neighbors + 1}.")
        dropout = _number(self.dropout, "dropout")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}.")
        _set(self, "dropout", dropout)
        _set(self, "deterministic_embedding", bool(self.deterministic_embedding))
        if self.gre_semantics not in GRE_SEMANTICS:
            raise ValueError(f"gre_semantics must be one of {GRE_SEMANTICS}, got {self.gre_semantics!r}.")
        _set(self, "seed", _int(self.seed, "seed", minimum=0))

    @property
    def latent_dim(self) -> int:
        return self.hidden_size[-1]


@dataclass(frozen=True)
class OptimizerConfig(_Serialisable):
    """Adam (PyTorch's operation order) and the LR plateau schedule.

    Attributes
    ----------
    lr
        Adam's learning rate.
    lr_patience
        Cut the LR by ``lr_factor`` once the epoch loss has not improved for more than this many
        epochs (PyTorch ``ReduceLROnPlateau``); None keeps it fixed, as the original ``Runner``.
    lr_factor
        The cut, in (0, 1).
    min_lr
        The floor of the LR, in [0, lr].

    Examples
    --------
    >>> import scniche_jax as sj
    >>> sj.OptimizerConfig(lr=0.005, lr_patience=None).lr
    0.005
    """

    lr: float = 0.01
    lr_patience: Optional[int] = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-6

    def __post_init__(self):
        lr = _number(self.lr, "lr")
        if lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")
        _set(self, "lr", lr)
        _set(self, "lr_patience", _optional_int(self.lr_patience, "lr_patience", minimum=0))
        factor = _number(self.lr_factor, "lr_factor")
        if not 0 < factor < 1:
            raise ValueError(f"lr_factor must lie in (0, 1), got {self.lr_factor!r}.")
        _set(self, "lr_factor", factor)
        min_lr = _number(self.min_lr, "min_lr")
        if not 0 <= min_lr <= lr:
            raise ValueError(f"min_lr must lie in [0, lr={lr}], got {self.min_lr!r}.")
        _set(self, "min_lr", min_lr)


@dataclass(frozen=True)
class StoppingConfig(_Serialisable):
    """How long to train and when to stop early.

    Attributes
    ----------
    epochs
        Most epochs of one ``train`` call (one step per batch per epoch).
    patience
        Stop when the epoch loss has not improved by more than ``min_delta`` for this many epochs
        (None: never).
    min_delta
        The improvement that counts, >= 0.
    restore_best
        Embed with the best-loss parameters.
    ari_every
        Every this many epochs, KMeans (``ari_k`` clusters) on the embedding and its ARI against the
        previous probe (None: no probe).
    ari_k
        Clusters of the probe, >= 2.
    ari_stop_threshold
        Stop once ``ari_stop_patience`` probes in a row reach it (needs ``ari_every``).
    ari_stop_patience
        Probes in a row needed.

    Examples
    --------
    >>> import scniche_jax as sj
    >>> sj.StoppingConfig(patience=10, ari_every=5, ari_stop_threshold=0.95).ari_every
    5
    """

    epochs: int = 100
    patience: Optional[int] = None
    min_delta: float = 0.0
    restore_best: bool = True
    ari_every: Optional[int] = None
    ari_k: int = 10
    ari_stop_threshold: Optional[float] = None
    ari_stop_patience: int = 2

    def __post_init__(self):
        _set(self, "epochs", _int(self.epochs, "epochs"))
        _set(self, "patience", _optional_int(self.patience, "patience"))
        min_delta = _number(self.min_delta, "min_delta")
        if min_delta < 0:
            raise ValueError(f"min_delta must be a number >= 0, got {self.min_delta!r}.")
        _set(self, "min_delta", min_delta)
        _set(self, "restore_best", bool(self.restore_best))
        _set(self, "ari_every", _optional_int(self.ari_every, "ari_every"))
        _set(self, "ari_k", _int(self.ari_k, "ari_k", minimum=2))
        if self.ari_stop_threshold is not None:
            threshold = _number(self.ari_stop_threshold, "ari_stop_threshold")
            if not -1 <= threshold <= 1:
                raise ValueError(f"ari_stop_threshold must lie in [-1, 1], got {self.ari_stop_threshold!r}.")
            if self.ari_every is None:
                raise ValueError("ari_stop_threshold needs the ARI probe: set ari_every (e.g. ari_every=5).")
            _set(self, "ari_stop_threshold", threshold)
        _set(self, "ari_stop_patience", _int(self.ari_stop_patience, "ari_stop_patience"))


def resolve_precision(precision: str, platform: str) -> str:
    """``precision`` with ``'auto'`` replaced: ``'fp32'`` on a CPU, ``'bf16'`` on GPUs and TPUs.

    On CPUs an epoch is as fast or faster in fp32: the loss's matmuls are B × d × B with d = 10,
    bound by the elementwise work, and bf16 only adds conversions. Accelerators gain from bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision != "auto":
        return precision
    return "fp32" if platform == "cpu" else "bf16"


@dataclass(frozen=True)
class BatchConfig(_Serialisable):
    """How the work is laid out: batches, precision, memory and devices.

    Attributes
    ----------
    batch_num
        None trains on the full graph; an integer splits the cells into that many equal batches
        exactly as the reference does; ``'auto'`` aims at ``cells_per_batch`` cells per batch (about
        1000 on a CPU, 5000 on a GPU). The frozen fusion network, saved in ``model.pt``, takes
        4·B² bytes for graphs of B cells: 94 MB for the full graph of 4,839 cells, 1.6 GB for
        20,000 (``Model.save(..., torch_format=False)`` skips that file).
    cells_per_batch
        The target of ``batch_num='auto'`` (None: the platform's default).
    precision
        ``'bf16'`` (bf16 operands, fp32 accumulation in the B² loss matmuls), ``'fp32'``, or
        ``'auto'``: fp32 on a CPU, bf16 on an accelerator (:func:`resolve_precision`; a CPU has no
        faster bf16 path for these thin matmuls and spends time converting).
    block_size
        Rows per block of the B² loss and of the fusion network; on a CPU the loss takes fewer rows
        where a block would exceed about 2^20 entries (:func:`scniche_jax.step.loss_block_size`; the
        memory check keeps ``block_size``, an over-estimate there).
    memory_limit
        Bytes one device may use; None takes 90 % of what is free.
    n_devices
        Data-parallel devices (set from ``devices``; 1 trains one batch per step).

    Examples
    --------
    >>> import scniche_jax as sj
    >>> sj.BatchConfig(batch_num="auto", cells_per_batch=2000).cells_per_batch
    2000
    """

    batch_num: Optional[int | str] = None
    cells_per_batch: Optional[int] = None
    precision: str = "auto"
    block_size: int = 1024
    memory_limit: Optional[float] = None
    n_devices: int = 1

    def __post_init__(self):
        if isinstance(self.batch_num, str):
            if self.batch_num != "auto":
                raise ValueError(f"batch_num must be None (full graph), an integer >= 1 or 'auto', "
                                 f"got {self.batch_num!r}.")
        elif self.batch_num is not None:
            if isinstance(self.batch_num, bool) or not isinstance(self.batch_num, (int, np.integer)) \
                    or self.batch_num < 1:
                raise ValueError(f"batch_num must be None (full graph), an integer >= 1 or 'auto', "
                                 f"got {self.batch_num!r}.")
            _set(self, "batch_num", int(self.batch_num))
        if self.cells_per_batch is not None:
            if self.batch_num != "auto":
                raise ValueError("cells_per_batch only applies to batch_num='auto'; pass batch_num='auto' or drop it.")
            _set(self, "cells_per_batch", _int(self.cells_per_batch, "cells_per_batch", minimum=2))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}.")
        _set(self, "block_size", _int(self.block_size, "block_size"))
        if self.memory_limit is not None:
            if isinstance(self.memory_limit, bool) or not isinstance(self.memory_limit, (int, float)) \
                    or not self.memory_limit > 0:
                raise ValueError(f"memory_limit must be a number of bytes > 0, got {self.memory_limit!r}.")
        _set(self, "n_devices", _int(self.n_devices, "n_devices"))
        if self.n_devices > 1 and self.batch_num != "auto":
            n = self.n_devices
            if self.batch_num is None:
                raise ValueError(f"training on {n} devices splits the batches across them: set batch_num to a "
                                 f"multiple of {n} (e.g. batch_num={n}) or batch_num='auto'.")
            if self.batch_num % n:
                lower, upper = (self.batch_num // n) * n, (self.batch_num // n + 1) * n
                options = f"batch_num={upper}" if lower == 0 else f"batch_num={lower} or {upper}"
                raise ValueError(f"batch_num={self.batch_num} is not a multiple of the {n} devices (each step "
                                 f"trains one batch per device); use {options}.")


@dataclass(frozen=True)
class DataShape(_Serialisable):
    """What the first ``train`` learned of the data: the view widths and the graph size.

    Attributes:
      input_sizes: feature width of each view.
      batch_size: cells per graph (all cells in full-graph mode); the fusion network's width.
      batch_num: batches of the first run (None: the full graph).
    """

    input_sizes: tuple[int, ...]
    batch_size: int
    batch_num: Optional[int] = None

    def __post_init__(self):
        _set(self, "input_sizes", _widths(self.input_sizes, "input_sizes"))
        _set(self, "batch_size", _int(self.batch_size, "batch_size", minimum=2))
        _set(self, "batch_num", _optional_int(self.batch_num, "batch_num"))
