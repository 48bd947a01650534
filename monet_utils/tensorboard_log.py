"""TensorBoard event files of a run, under output_dir/tensorboard: every `tensorboard_every` steps,
the mean of each loss over those steps, both learning rates and the steps per second; at each
evaluation (evaluation.py) the FID, the MiFID and the sample grid. Process 0
alone writes. A resumed run appends to the same folder and first hides what the interrupted run
logged after its checkpoint (the writer's `purge_step`), so no step shows twice.
Logging never ends a run: a write that fails (a full disk, say) stops the logging, said in one line.
"""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from tqdm import tqdm

from .plots import loss_names
from .progress import SHARE_AFTER_SECONDS


class TensorBoardLog:
    def __init__(self, log_dir: str | Path, every: int, start_step: int):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # Events from step start_step + 1 on were written after the checkpoint resumed: hidden.
        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step else None)
        self.log_dir = self.writer.log_dir
        self.every = every
        self.opened = self.last_time = time.perf_counter()
        self.last_step = start_step
        self.seconds = 0.0  # spent in this object's calls: its share of the training time
        self.writes = 0
        self.stopped = ""  # why logging stopped, when a write failed
        self.stopped_at = 0

    @classmethod
    @contextlib.contextmanager
    def open(cls, config, start_step: int, rank: int):
        """The run's log while training, closed after with a line saying what it cost; None on
        processes other than 0, with `tensorboard_every` = 0, without the tensorboard package or
        when its folder cannot be written (said in one line: training goes on without it)."""
        if rank != 0 or not config.tensorboard_every:
            yield None
            return
        try:
            log = cls(Path(config.output_dir) / "tensorboard", config.tensorboard_every, start_step)
        except ImportError as err:
            print(f"TensorBoard logging is off: {err} (pip install tensorboard, or set tensorboard_every=0)")
            yield None
            return
        except Exception as err:  # noqa: BLE001 - a full disk, a file where the folder should be: logging only
            print(f"TensorBoard logging is off: {type(err).__name__}: {err}; training goes on")
            yield None
            return
        previous_hook = threading.excepthook
        threading.excepthook = log.quiet_writer_thread(previous_hook)
        try:
            yield log
        finally:
            threading.excepthook = previous_hook
            tqdm.write(log.close())  # above the progress bar, which is still drawn

    @staticmethod
    def quiet_writer_thread(previous_hook):
        """tensorboard's writer thread prints the traceback of a failed write, which its next
        call raises again: that call says it, in one line (`guarded`)."""
        def hook(args):
            if type(args.thread).__name__ != "_AsyncWriterThread":
                previous_hook(args)
        return hook

    def guarded(self, step: int, write) -> None:
        """`write()` unless logging has stopped; a failure stops it, with one line."""
        if self.stopped:
            return
        started = time.perf_counter()
        try:
            write()
        except Exception as err:  # noqa: BLE001 - whatever it is, the training goes on
            self.stopped, self.stopped_at = f"{type(err).__name__}: {err}", step
            tqdm.write(f"TensorBoard logging stopped at step {step:,} ({self.stopped}); training goes on")
        self.seconds += time.perf_counter() - started

    def after_step(self, step: int, history: list[dict], learning_rates) -> None:
        """Called after every step; writes at multiples of `every`. The losses are the mean of
        the history's records of the last `every` steps (skipped steps have none);
        `learning_rates()` gives {name: lr}, asked for only when writing."""
        if step % self.every:
            return
        self.guarded(step, lambda: self.write_step(step, history, learning_rates))

    def write_step(self, step: int, history: list[dict], learning_rates) -> None:
        now = time.perf_counter()
        window = [record for record in history[-self.every:] if record["step"] > step - self.every]
        for name in loss_names(window[0]) if window else ():
            self.writer.add_scalar(f"loss/{name}", sum(r[name] for r in window) / len(window), step)
        for name, lr in learning_rates().items():
            self.writer.add_scalar(f"lr/{name}", lr, step)
        self.writer.add_scalar("speed/steps_per_second", (step - self.last_step) / (now - self.last_time), step)
        self.last_step, self.last_time = step, now
        self.writes += 1

    def log_evaluation(self, step: int, scores: dict, grid) -> None:
        def write():
            self.writer.add_scalar("eval/fid", scores["fid"], step)
            self.writer.add_scalar("eval/mifid", scores["mifid"], step)
            self.writer.add_figure("eval/samples", grid, step, close=False)
        self.guarded(step, write)

    def close(self) -> str:
        """Flush and close; returns the line that says what logging cost."""
        self.guarded(self.last_step, self.writer.close)
        elapsed = time.perf_counter() - self.opened
        share = (f"{100 * self.seconds / elapsed:.3f}%" if elapsed >= SHARE_AFTER_SECONDS else
                 f"training too short for a share")
        stopped = f"; it stopped at step {self.stopped_at:,}" if self.stopped else ""
        return (f"TensorBoard: {self.writes} writes to {self.log_dir}, {self.seconds:.2f} s of {elapsed:.0f} s of "
                f"training ({share}){stopped}")
