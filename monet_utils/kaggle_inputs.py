"""What a Kaggle notebook has attached, found by searching: the competition data and other
notebooks' outputs mount under /kaggle/input at more than one depth
(`/kaggle/input/<slug>`, `/kaggle/input/competitions/<slug>`, `/kaggle/input/<notebook>`,
`/kaggle/input/notebooks/<user>/<slug>`), so nothing here relies on one path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

KAGGLE_INPUT = Path("/kaggle/input")
# /kaggle/input/notebooks/<user>/<slug>/checkpoints/best.pt is 5 folders down.
SEARCH_DEPTH = 5


def input_root() -> Path:
    """Where Kaggle mounts a notebook's inputs (tests point it at a folder of their own)."""
    return KAGGLE_INPUT


def find_folders(is_wanted: Callable[[Path], bool], root: Path | None = None, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Folders under `root` (default: the inputs) for which `is_wanted` holds, at most `depth`
    levels down, sorted. The search does not go inside a folder it found."""
    found, level = [], [Path(root or input_root())]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            if is_wanted(folder):
                found.append(folder)
            else:
                below += [path for path, is_dir in entries(folder) if is_dir]
        level = below
    return sorted(found)


def find_files(is_wanted: Callable[[Path], bool], root: Path | None = None, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Files under `root` (default: the inputs) for which `is_wanted` holds, at most `depth`
    folders down, sorted."""
    found, level = [], [Path(root or input_root())]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            for path, is_dir in entries(folder):
                if is_dir:
                    below.append(path)
                elif is_wanted(path):
                    found.append(path)
        level = below
    return sorted(found)


def entries(folder: Path) -> list[tuple[Path, bool]]:
    """(path, is a folder) of each entry, from the directory listing alone (a folder of 7,038
    photos costs no stat per photo); none where the folder cannot be read."""
    try:
        with os.scandir(folder) as scan:
            return [(Path(entry.path), entry.is_dir()) for entry in scan]
    except OSError:
        return []
