"""Files written whole or not at all: under a temporary name, then renamed into place.

A crash, a kill or a full disk never leaves half a file, and the previous file stays as it was.
A failed write says which file, how much room its disk has left, and what was kept. Every file a
run leaves for the user (checkpoints, JSON, figures, images.zip, translations) is written here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable


class WriteError(OSError):
    """A file could not be written (a full disk, say); the message names it and the free space."""


@contextlib.contextmanager
def replaced_on_success(path: str | os.PathLike, shared: bool = False):
    """A temporary path beside `path` to fill in the block, renamed to `path` when the block ends;
    removed if it raises, whose error goes on unchanged. For a file filled while its contents are
    made (images.zip, streamed from the generator), whose errors are not all the disk's.

    The temporary is `path` + ".tmp", so a killed write's leftover is reused, not piled up. A file
    that several processes may write at once (the same demo data) is `shared`: each writer gets
    a temporary of its own, and the last rename wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp" if shared else path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object], what: str = "file",
                     shared: bool = False) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    try:
        with replaced_on_success(path, shared) as tmp:
            write(tmp)
    except (OSError, RuntimeError) as err:  # a full disk surfaces as RuntimeError from torch's zip writer
        free_mb = shutil.disk_usage(path.parent).free / 2 ** 20
        kept = f"the previous {what} is kept" if path.exists() else f"no {what} was written"
        raise WriteError(f"could not write {what} {path} ({free_mb:,.0f} MB free on its disk; "
                         f"{type(err).__name__}: {str(err).splitlines()[0]}); {kept}") from None
    return path
