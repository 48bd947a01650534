"""Fit the schedule to a session: from the step time measured in a run's first steps, how many
epochs (constant, then linear decay, half and half as in the paper's 100 + 100) end inside
`time_budget_hours` with `reserve_minutes` left for the export and the estimate."""
from __future__ import annotations

from dataclasses import dataclass

PLAN_AFTER_STEPS = 20  # steps timed before planning; the first few (compilation, warm-up) are left out
SAFETY = 0.95  # plan for this share of the training time: step times drift


@dataclass
class TimePlan:
    epochs: int
    decay_epochs: int
    max_steps: int  # 0, unless fewer than two epochs fit: then a step limit and no decay
    step_seconds: float
    train_seconds: float  # the whole plan's training time, over every session

    def describe(self, steps_per_epoch: int, budget_hours: float, sessions: int, reserve_minutes: float) -> str:
        steps = self.max_steps or self.epochs * steps_per_epoch
        if self.max_steps:
            shape = f"{steps:,} steps of the first epoch, no decay (less than two epochs fit)"
        else:
            shape = (f"{self.epochs} epochs ({self.epochs - self.decay_epochs} constant + {self.decay_epochs} "
                     f"decaying), {steps:,} steps")
        over = f" over {sessions} sessions" if sessions > 1 else ""
        return (f"Time plan: {self.step_seconds:.3f} s/step measured -> {shape}, about "
                f"{self.train_seconds / 3600:.2f} h of training{over}; budget {budget_hours:g} h per session "
                f"with {reserve_minutes:g} min kept for the export and the estimate.")


def plan_schedule(budget_hours: float, reserve_minutes: float, sessions: int, step_seconds: float,
                  steps_per_epoch: int, steps_done: int = 0, seconds_done: float = 0.0) -> TimePlan:
    """The longest schedule whose training fits `sessions` x (budget - reserve), given that
    `steps_done` steps already took `seconds_done`."""
    available = sessions * (budget_hours * 3600 - reserve_minutes * 60) * SAFETY - seconds_done
    steps = steps_done + max(0, int(available // step_seconds))
    epochs = steps // steps_per_epoch
    if epochs >= 2:
        steps = epochs * steps_per_epoch
        return TimePlan(epochs, epochs // 2, 0, step_seconds, seconds_done + (steps - steps_done) * step_seconds)
    steps = min(max(steps, steps_done, 1), steps_per_epoch)
    return TimePlan(1, 0, steps, step_seconds, seconds_done + (steps - steps_done) * step_seconds)
