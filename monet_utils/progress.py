"""Progress bars that suit both a terminal and a papermill-executed notebook."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

from tqdm import tqdm

# Below this much training time a share of it says nothing ("805.6% of the training time"): lines give seconds.
SHARE_AFTER_SECONDS = 60.0


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A text tqdm bar; off a terminal (notebooks, logs) it redraws every 10 s, since papermill
    keeps every redraw as an output and a bar at tqdm's default rate bloats the notebook to MBs,
    and it writes to stdout, so that it stays in order with the cell's prints."""
    terminal = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if terminal else 10.0)
    kwargs.setdefault("file", sys.stderr if terminal else sys.stdout)
    return tqdm(iterable, **kwargs)


class PrefixedLines:
    """A text stream that writes every line, and every progress-bar redraw ('\\r'), of what it
    is given as a line of its own starting with `prefix`: parallel runs stay readable in one
    terminal."""

    def __init__(self, target, prefix: str):
        self.target, self.prefix = target, prefix
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        lines = [piece for piece in re.split(r"[\r\n]+", text) if piece.strip()]
        with self.lock:
            self.target.write("".join(f"{self.prefix}{line}\n" for line in lines))
            self.target.flush()

    def flush(self) -> None:
        self.target.flush()


class ReaderlessStream:
    """sys.stdout or sys.stderr, whose writes go to /dev/null once its reader has gone, instead of
    raising BrokenPipeError. `run ... 2>&1 | tee log` and Ctrl-C: tee ends with the same signal,
    and a run that raised at its next line of output died before its checkpoint."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self.to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self.to_devnull()

    def to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())
        os.close(devnull)

    def __getattr__(self, name):  # isatty, fileno, encoding, ...
        return getattr(self.stream, name)


@contextlib.contextmanager
def output_that_outlives_its_reader():
    """sys.stdout and sys.stderr as `ReaderlessStream`s meanwhile (a command's whole run)."""
    previous = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ReaderlessStream(sys.stdout), ReaderlessStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = previous
