"""Sphinx configuration of the scniche-jax documentation (scverse style: furo, MyST, autosummary).

Build: ``pip install -e ".[docs]"`` then ``sphinx-build -W -b html docs docs/_build/html``.
Nothing is fetched from the network at build time (no intersphinx); the tutorial notebooks
are rendered with the outputs stored in them (``nb_execution_mode = "off"``).
"""
from __future__ import annotations

import os
import shutil
import sys
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The tutorials live in examples/ (where users run them); copy them next to the docs sources.
_TUTORIALS = HERE / "tutorials" / "_generated"
_TUTORIALS.mkdir(parents=True, exist_ok=True)
for name in ("quickstart.ipynb", "analysis.ipynb", "from_scniche.md"):
    shutil.copyfile(ROOT / "examples" / name, _TUTORIALS / name)
# Plots of the benchmarks, kept in the repository beside the results they show.
_STATIC_PLOTS = HERE / "_static" / "_generated"
_STATIC_PLOTS.mkdir(parents=True, exist_ok=True)
for src in (ROOT / "benchmarks" / "results" / "niche_quality" / "ari.png", ROOT / "parity" / "bench_epoch_time.png"):
    if src.exists():
        shutil.copyfile(src, _STATIC_PLOTS / src.name)

project = "scniche-jax"
author = "scniche-jax developers"
copyright = "2026, scniche-jax developers"
release = _version("scniche-jax")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
]

# .rst first: autosummary writes its API stubs with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST / notebooks
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist", "html_image"]
myst_heading_anchors = 3
nb_execution_mode = "off"          # render the outputs stored in the notebooks
nb_merge_streams = True

# API reference
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "description"
typehints_defaults = "comma"
always_document_param_types = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_use_ivar = True
napoleon_custom_sections = [("Params", "params_style")]
# Types named in signatures that have no page here (no intersphinx: nothing is fetched).
nitpicky = False

html_theme = "furo"
html_title = f"scniche-jax {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
html_theme_options = {
    "sidebar_hide_name": False,
    "navigation_with_keys": True,
}
