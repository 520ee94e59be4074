"""Progress bars: tqdm's notebook-aware bar, without its warning when ipywidgets is absent."""
from __future__ import annotations

import sys
import warnings


def progress_bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``; a text bar where notebook widgets are missing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm(iterable, **kwargs)


def progress_write(message: str) -> None:
    """Prints ``message`` above any running bar (tqdm's ``write``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    tqdm.write(message, file=sys.stderr)
