"""Fit the schedule to a session: from the step time measured in a run's first steps, how many
epochs (constant, then linear decay, half and half as in the paper's 100 + 100) end inside
`time_budget_hours`, counted from the session's start (the notebook kernel's, the command's), so
the minutes spent before training (installs, data, model build) count too, with
`reserve_minutes` left after training for images.zip and the estimate."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PLAN_AFTER_STEPS = 20  # steps timed before planning; the first few (compilation, warm-up) are left out
SAFETY = 0.95  # plan for this share of the training time: step times drift
# time.monotonic() at the session's start, as a process passes it on to those it starts (the
# notebook kernel to torchrun's workers). Linux's monotonic clock is one for every process.
SESSION_STARTED_ENV = "MONET_SESSION_STARTED"
IMPORTED_AT = time.monotonic()


def session_started() -> float:
    """time.monotonic() when this session began: $MONET_SESSION_STARTED when the process that
    started this one passed it on, else this process's own start."""
    passed_on = os.environ.get(SESSION_STARTED_ENV)
    return float(passed_on) if passed_on else time.monotonic() - process_age()


def process_age() -> float:
    """Seconds since this process started (Linux: /proc), else since this module was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - IMPORTED_AT


@dataclass
class TimePlan:
    epochs: int
    decay_epochs: int
    max_steps: int  # 0, unless fewer than two epochs fit: then a step limit and no decay
    step_seconds: float
    train_seconds: float  # the whole plan's training time, over every session
    setup_seconds: float = 0.0  # of the session that planned, spent before training

    def describe(self, steps_per_epoch: int, budget_hours: float, sessions: int, reserve_minutes: float) -> str:
        steps = self.max_steps or self.epochs * steps_per_epoch
        if self.max_steps:
            shape = f"{steps:,} steps of the first epoch, no decay (less than two epochs fit)"
        else:
            shape = (f"{self.epochs} epochs ({self.epochs - self.decay_epochs} constant + {self.decay_epochs} "
                     f"decaying), {steps:,} steps")
        budget = f"{budget_hours * 60:g} min"
        if sessions > 1:
            when = (f" over {sessions} sessions; each trains until {reserve_minutes:g} min before its {budget} end, "
                    f"counted from its start, and keeps those for images.zip and the estimate")
        else:
            ends = self.setup_seconds / 60 + self.train_seconds / 60 + reserve_minutes
            when = (f" after {self.setup_seconds / 60:.0f} min of set-up; the run ends about {ends:.0f} min after it "
                    f"started, {reserve_minutes:g} min of them kept for images.zip and the estimate, within its {budget}")
        return (f"Time plan: {self.step_seconds:.3f} s/step measured -> {shape}, about "
                f"{self.train_seconds / 3600:.2f} h of training{when}.")


def plan_schedule(budget_hours: float, reserve_minutes: float, sessions: int, step_seconds: float,
                  steps_per_epoch: int, steps_done: int = 0, seconds_done: float = 0.0,
                  setup_seconds: float = 0.0) -> TimePlan:
    """The longest schedule whose training fits `sessions` x (budget - reserve - setup), given that
    `steps_done` steps already took `seconds_done` and each session spends `setup_seconds` (this
    one's) before training."""
    per_session = budget_hours * 3600 - reserve_minutes * 60 - setup_seconds
    available = sessions * per_session * SAFETY - seconds_done
    steps = steps_done + max(0, int(available // step_seconds))
    epochs = steps // steps_per_epoch
    if epochs >= 2:
        steps = epochs * steps_per_epoch
        return TimePlan(epochs, epochs // 2, 0, step_seconds, seconds_done + (steps - steps_done) * step_seconds,
                        setup_seconds)
    steps = min(max(steps, steps_done, 1), steps_per_epoch)
    return TimePlan(1, 0, steps, step_seconds, seconds_done + (steps - steps_done) * step_seconds, setup_seconds)
