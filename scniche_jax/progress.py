"""Progress bars: tqdm's notebook-aware bar, without its warning when ipywidgets is absent."""
from __future__ import annotations

import sys
import warnings


def _tqdm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm


def progress_bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``; a text bar where notebook widgets are missing."""
    return _tqdm()(iterable, **kwargs)


def progress_write(message: str) -> None:
    """Prints ``message`` to stderr above any running bar (tqdm's ``write``)."""
    _tqdm().write(message, file=sys.stderr)
