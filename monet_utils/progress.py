"""Progress bars that suit both a terminal and a papermill-executed notebook."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A text tqdm bar; off a terminal (notebooks, logs) it redraws every 10 s, since papermill
    keeps every redraw as an output and a bar at tqdm's default rate bloats the notebook to MBs."""
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    return tqdm(iterable, **kwargs)
