"""TensorBoard event files of a run, under output_dir/tensorboard: every `tensorboard_every` steps,
the mean of each loss over those steps, both learning rates and the steps per second; at each
evaluation (evaluation.py) the FID, the MiFID and the sample grid. Process 0
alone writes. A resumed run appends to the same folder and first hides what the interrupted run
logged after its checkpoint (the writer's `purge_step`), so no step shows twice.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .cyclegan import LOSS_NAMES


class TensorBoardLog:
    def __init__(self, log_dir: str | Path, every: int, start_step: int):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # Events from step start_step + 1 on were written after the checkpoint resumed: hidden.
        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step else None)
        self.every = every
        self.opened = self.last_time = time.perf_counter()
        self.last_step = start_step
        self.seconds = 0.0  # spent in this object's calls: its share of the training time
        self.writes = 0

    @classmethod
    @contextlib.contextmanager
    def open(cls, config, start_step: int, rank: int):
        """The run's log while training, closed after with a line saying what it cost; None on
        processes other than 0, with `tensorboard_every` = 0, or without the tensorboard package
        (said in one line: training goes on without it)."""
        if rank != 0 or not config.tensorboard_every:
            yield None
            return
        try:
            log = cls(Path(config.output_dir) / "tensorboard", config.tensorboard_every, start_step)
        except ImportError as err:
            print(f"TensorBoard logging is off: {err} (pip install tensorboard, or set tensorboard_every=0)")
            yield None
            return
        try:
            yield log
        finally:
            print(log.close())

    def after_step(self, step: int, history: list[dict], learning_rates) -> None:
        """Called after every step; writes at multiples of `every`. The losses are the mean of
        the history's records of the last `every` steps (skipped steps have none);
        `learning_rates()` gives {name: lr}, asked for only when writing."""
        if step % self.every:
            return
        started = time.perf_counter()
        window = [record for record in history[-self.every:] if record["step"] > step - self.every]
        for name in LOSS_NAMES if window else ():
            self.writer.add_scalar(f"loss/{name}", sum(r[name] for r in window) / len(window), step)
        for name, lr in learning_rates().items():
            self.writer.add_scalar(f"lr/{name}", lr, step)
        self.writer.add_scalar("speed/steps_per_second", (step - self.last_step) / (started - self.last_time), step)
        self.last_step, self.last_time = step, started
        self.writes += 1
        self.seconds += time.perf_counter() - started

    def log_evaluation(self, step: int, scores: dict, grid) -> None:
        started = time.perf_counter()
        self.writer.add_scalar("eval/fid", scores["fid"], step)
        self.writer.add_scalar("eval/mifid", scores["mifid"], step)
        self.writer.add_figure("eval/samples", grid, step, close=False)
        self.seconds += time.perf_counter() - started

    def close(self) -> str:
        """Flush and close; returns the line that says what logging cost."""
        started = time.perf_counter()
        self.writer.close()
        self.seconds += time.perf_counter() - started
        elapsed = time.perf_counter() - self.opened
        return (f"TensorBoard: {self.writes} writes to {self.writer.log_dir}, {self.seconds:.2f} s of "
                f"{elapsed:.0f} s of training ({100 * self.seconds / elapsed:.3f}%)")
