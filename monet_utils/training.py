"""The training loop around a model (`cyclegan.CycleGAN`, or `cut.CUT` for CUT and FastCUT):
epochs and the LR schedule, checkpoints (every `checkpoint_every` steps, every
`checkpoint_minutes`, at each epoch's end and on the way out), stop requests (SIGINT, SIGTERM),
the time plan, progress and metrics; and what a checkpoint holds, with resuming from one. The maths of a step is the model's (its `train_step`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from .acceleration import accelerate, resolve_device, resolve_speed
from .checkpoints import (CheckpointError, check_architecture, load_generator, read_checkpoint, resume_from_path,
                          write_checkpoint)
from .config import CycleGANConfig
from .cut import CUT
from .cyclegan import CycleGAN
from .data import make_train_loader
from .distributed import any_rank, from_first_rank, gather, mean_over_ranks, rank_and_world, replicate
from .files import write_atomically
from .progress import SHARE_AFTER_SECONDS, progress_bar
from .tensorboard_log import TensorBoardLog
from .time_budget import PLAN_AFTER_STEPS, TimePlan, plan_schedule, session_started


MODELS = {"cyclegan": CycleGAN, "cut": CUT, "fastcut": CUT}  # by config.model


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training between two steps, after a checkpoint was saved."""


@contextlib.contextmanager
def stop_requests():
    """While training, SIGINT and SIGTERM ask the loop to stop after the current step (the list
    yielded gets the signal's name), so the checkpoint written on the way out is a whole step.
    A second Ctrl-C stops at once. Signal handlers can only be set from the main thread."""
    requested: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def ask_to_stop(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signal.Signals(signum).name)
        if rank_and_world()[0] == 0:  # every process got it from torchrun
            with contextlib.suppress(OSError):  # output whose reader is gone must not stop the stop
                print(f"\n{requested[0]}: training stops after this step and saves a checkpoint", file=sys.stderr,
                      flush=True)

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def rng_state(device: torch.device) -> dict:
    """This process's random state: the CPU's, and its own GPU's when it trains on one."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(state: dict, rank: int, device: torch.device) -> None:
    """Set this process's streams from a checkpoint's: its rank's (exact when resumed with as many
    processes as saved them), on its own device only, so a T4 x2 checkpoint resumes on one GPU.
    Older checkpoints hold rank 0's CPU state and every visible GPU's state by device index."""
    if "rng" in state:
        mine = state["rng"][rank % len(state["rng"])]
        torch.set_rng_state(mine["torch"])
        if device.type == "cuda" and mine["cuda"] is not None:
            torch.cuda.set_rng_state(mine["cuda"], device)
        return
    torch.set_rng_state(state["torch_rng"])
    index = device.index or 0
    if device.type == "cuda" and index < len(state.get("cuda_rng", [])):
        torch.cuda.set_rng_state(state["cuda_rng"][index], device)


class CycleGANTrainer:
    def __init__(self, config: CycleGANConfig, device: torch.device | None = None):
        """`device` is the process's own in a distributed run (`distributed.init_process_group`).
        The trainer keeps a copy of `config`: a time plan or a resumed plan changes only its own."""
        self.config = config.replace()
        self.device = device or resolve_device(config.device)
        self.rank, self.world_size = rank_and_world()
        self.speed = resolve_speed(config, self.device)
        self.model = MODELS[self.config.model](self.config, self.device, self.speed, self.rank)
        accelerate(self.model.networks, self.speed, self.device)
        self.model.replicas = replicate(self.model.networks, self.device)
        # A plain function, not the bound method: LambdaLR then leaves it out of its state_dict.
        self.sched_G, self.sched_D = (torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: self.lr_factor(epoch))
                                      for opt in (self.model.opt_G, self.model.opt_D))
        self.step = self.epoch = self.epoch_step = 0  # epoch_step: steps done in the current epoch
        self.train_seconds = 0.0  # summed over resumed runs
        self.history: list[dict] = []
        self.evaluations: list[dict] = []  # {"step", "epoch", "fid", "mifid", "seconds"} of each evaluation
        self.best: dict | None = None  # the evaluation whose generator best.pt holds (best.pt's own record)
        self.evaluated_at = time.monotonic()  # when the last evaluation ended
        self.evaluation_failed = ""  # why an evaluation failed: evaluation is then off for the rest of the run
        self.processes = self.world_size  # the processes that trained the weights held (a loaded checkpoint's)
        self.saved_at = time.monotonic()  # when the last checkpoint was written
        self.plan: TimePlan | None = None  # the schedule `time_budget_hours` chose, kept by checkpoints
        self.out_of_time = False  # the last fit stopped at the session's time budget
        self.setup_seconds = 0.0  # of this session, spent before training (time_budget_hours counts it)

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.config.output_dir) / "checkpoints" / "latest.pt"

    @property
    def best_path(self) -> Path:
        """The photo -> Monet generator of the best FID so far, with that evaluation's record."""
        return self.checkpoint_path.with_name("best.pt")

    def lr_factor(self, epoch: int) -> float:
        """The LR multiplier during `epoch` (from 0): constant, then the reference's `linear` policy
        over the last `decay_epochs`. The reference steps its scheduler at the start of each
        epoch, so it is a step ahead of the epoch and the last epoch trains at 0. Without decay
        epochs the LR stays constant (the reference would still train its last epoch at 0)."""
        cfg = self.config
        if not cfg.decay_epochs:
            return 1.0
        return 1.0 - max(0, epoch + 2 - (cfg.epochs - cfg.decay_epochs)) / (cfg.decay_epochs + 1)

    def train_loader(self, dataset):
        """This process's batches of `dataset` by the resolved data path, on this trainer's device."""
        return make_train_loader(self.config, dataset, self.speed.data_path, self.device, self.rank, self.world_size)

    def resume(self) -> None:
        """Continue from output_dir's latest checkpoint, else from `resume_from` (a previous
        session's, say), whose schedule and time plan go on where they stopped, and whose best.pt
        comes along when output_dir has none."""
        path = self.checkpoint_path if self.checkpoint_path.exists() else resume_from_path(self.config.resume_from)
        if path is None:
            if self.config.resume_from == "auto" and self.rank == 0:
                print("resume_from = 'auto': no checkpoint among the attached inputs, so training starts afresh")
            self.best = self.read_best()
            return
        self.load(path)
        if path != self.checkpoint_path and self.best is None and self.rank == 0:
            self.carry_best(path.with_name(self.best_path.name))
        if self.rank == 0:
            epochs = self.config.epochs
            where = (f"its {epochs} epochs are done, there is nothing left to train" if epochs and self.epoch >= epochs
                     else f"epoch {self.epoch + 1} of {epochs or 'those the time budget allows'}")
            print(f"Resuming from {path}: step {self.step}; {where}")

    def fit(self, loader, resume: bool = True, progress: bool = True, evaluator=None) -> list[dict]:
        """Train to `epochs` (or `max_steps`), checkpointing as it goes; resumes (`resume`).
        `loader` comes from `data.make_train_loader`. With an `evaluation.Evaluator` (every process
        passes one, or none), the generator is scored every `eval_every` epochs, every `eval_steps`
        steps, every `eval_minutes`, and at the end (`evaluate`). With `time_budget_hours`,
        training stops when the session's training time is spent (`out_of_time`), with a
        checkpoint to continue from, and `epochs=0` is planned after the first steps to fit the budget. SIGINT (Ctrl-C,
        Jupyter's interrupt) or SIGTERM stops it after the current step with a checkpoint
        saved, then raises TrainingInterrupted."""
        cfg = self.config
        if resume:
            self.resume()
        if self.evaluation_failed:
            evaluator = None
        self.processes = self.world_size
        planning = cfg.epochs == 0  # a resumed plan has set them
        if planning:
            cfg.epochs = self.epoch + 1  # until the plan: this epoch, at the constant LR
        total = self.total_steps(loader.steps_per_epoch)
        bar = progress_bar(total=total, initial=min(self.step, total), desc="training", unit="step",
                           disable=not progress or self.rank != 0)
        started = time.perf_counter() - self.train_seconds
        self.saved_at = self.evaluated_at = time.monotonic()
        # The session's clock, not training's: what came before (installs, data, the model) counts too.
        self.setup_seconds = max(0.0, self.saved_at - session_started())
        deadline = self.saved_at - self.setup_seconds + cfg.time_budget_hours * 3600 - cfg.reserve_minutes * 60
        step_times: list[float] = []
        stopping = self.out_of_time = False  # agreed by every process, at the same step
        with stop_requests() as stop, TensorBoardLog.open(cfg, self.step, self.rank) as board:
            while self.epoch < cfg.epochs and self.step < total and not (stopping or self.out_of_time):
                loader.set_epoch(self.epoch, start_batch=self.epoch_step)
                for real_photo, real_monet in loader:
                    step_started = time.perf_counter()
                    losses = self.model.train_step(real_photo, real_monet)
                    step_times.append(time.perf_counter() - step_started)
                    self.step += 1
                    self.epoch_step += 1
                    if self.model.skipped_in_a_row == 0:
                        self.history.append({"step": self.step, "epoch": self.epoch, **losses})
                    if board:
                        board.after_step(self.step, self.history, self.learning_rates)
                    bar.update()
                    bar.set_postfix(epoch=self.epoch, **{name: f"{losses[name]:.3f}"
                                                         for name in self.model.progress_losses}, refresh=False)
                    self.train_seconds = time.perf_counter() - started
                    if planning and len(step_times) == min(PLAN_AFTER_STEPS, loader.steps_per_epoch):
                        planning = False
                        self.make_plan(step_times, loader.steps_per_epoch)
                        total = bar.total = self.total_steps(loader.steps_per_epoch)
                    stopping, due, self.out_of_time, evaluation_due = any_rank(
                        bool(stop), self.checkpoint_due(), bool(cfg.time_budget_hours) and time.monotonic() >= deadline,
                        bool(evaluator) and self.evaluation_due())
                    epoch_ends = self.epoch_step == loader.steps_per_epoch  # saved below in any case
                    if evaluator and not stopping and (
                            evaluation_due or self.step >= total or self.out_of_time
                            or (epoch_ends and cfg.eval_every and (self.epoch + 1) % cfg.eval_every == 0)
                            or (cfg.eval_steps and self.step % cfg.eval_steps == 0)):
                        line = self.evaluate(evaluator, board)
                        if self.rank == 0:
                            bar.write(line)
                        if self.evaluation_failed:
                            evaluator = None
                    if self.step >= total or stopping or self.out_of_time:
                        break
                    if not epoch_ends and (self.step % cfg.checkpoint_every == 0 or due):
                        self.save()
                if self.epoch_step >= loader.steps_per_epoch:  # also when max_steps ends exactly on an epoch
                    self.epoch += 1
                    self.epoch_step = 0
                    self.sched_G.step()
                    self.sched_D.step()
                self.save()
        bar.close()
        if self.out_of_time and self.step < total and self.rank == 0:
            print(f"Time budget spent: stopped at step {self.step:,} of {total:,}. To go on with the schedule in "
                  f"another session, set resume_from to this run's {self.checkpoint_path}.")
        if stopping:
            signal_name = stop[0] if stop else "a signal to another process"
            raise TrainingInterrupted(f"{signal_name}: training stopped after step {self.step}; checkpoint "
                                      f"{self.checkpoint_path} holds it, and a re-run resumes from there")
        return self.history

    def total_steps(self, steps_per_epoch: int) -> int:
        total = self.config.epochs * steps_per_epoch
        return min(total, self.config.max_steps) if self.config.max_steps else total

    def make_plan(self, step_times: list[float], steps_per_epoch: int) -> None:
        """Plan the schedule from the later half of the steps timed (the first pay for warm-up),
        averaged over the processes so that every one plans the same."""
        measured = torch.tensor([statistics.median(step_times[len(step_times) // 2:])], device=self.device)
        cfg = self.config
        plan = plan_schedule(cfg.time_budget_hours, cfg.reserve_minutes, cfg.budget_sessions,
                             float(mean_over_ranks(measured)), steps_per_epoch, self.step, self.train_seconds,
                             self.setup_seconds)
        if self.rank == 0:
            print(plan.describe(steps_per_epoch, cfg.time_budget_hours, cfg.budget_sessions, cfg.reserve_minutes))
        if cfg.max_steps and not 0 < plan.max_steps <= cfg.max_steps:  # a step limit given stays a limit
            plan = dataclasses.replace(plan, max_steps=cfg.max_steps)
            if self.rank == 0:
                print(f"max_steps={cfg.max_steps} stops it sooner, as set.")
        self.apply_plan(plan)

    def apply_plan(self, plan: TimePlan) -> None:
        """Set the planned schedule, and the LR of the current epoch under it."""
        self.plan = plan
        self.config.epochs, self.config.decay_epochs, self.config.max_steps = (
            plan.epochs, plan.decay_epochs, plan.max_steps)
        for scheduler in (self.sched_G, self.sched_D):
            for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base_lr * self.lr_factor(self.epoch)

    def learning_rates(self) -> dict[str, float]:
        return {"G": self.model.opt_G.param_groups[0]["lr"], "D": self.model.opt_D.param_groups[0]["lr"]}

    def evaluation_due(self) -> bool:
        """`eval_minutes` since the last evaluation (or since training started)."""
        return bool(self.config.eval_minutes) and (
            time.monotonic() - self.evaluated_at >= self.config.eval_minutes * 60)

    def evaluate(self, evaluator, board=None) -> str:
        """Score the generator now: process 0 evaluates, every process records its scores, and
        process 0 saves a better FID than best.pt's as best.pt. Returns the line that says what it
        found and what it cost."""
        shared = torch.full((4,), math.nan, dtype=torch.float64)  # NaN: it failed
        if self.rank == 0:
            try:
                scores, grid = evaluator.evaluate(self.model.G_photo2monet, self.model.G_monet2photo, self.step,
                                                  Path(self.config.output_dir) / "samples")
            except Exception as err:  # noqa: BLE001 - out of memory, a bad network, ...: the training goes on
                lines = str(err).strip().splitlines() or [""]
                # TorchScript's errors (the FID network is a TorchScript file) end with the original one.
                self.evaluation_failed = (lines[-1].removeprefix("builtins.") if isinstance(err, torch.jit.Error)
                                          else f"{type(err).__name__}: {lines[0]}")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            else:
                improved = self.best is None or scores["fid"] < self.best["fid"]
                shared = torch.tensor([scores["fid"], scores["mifid"], scores["seconds"], improved],
                                      dtype=torch.float64)
                if board:
                    board.log_evaluation(self.step, scores, grid)
                plt.close(grid)
        fid, mifid, seconds, improved = from_first_rank(shared).tolist()
        if math.isnan(fid):
            self.evaluation_failed = self.evaluation_failed or "on process 0"
            return (f"Evaluation at step {self.step:,} failed ({self.evaluation_failed}); evaluation is off for the "
                    f"rest of this run, and training goes on")
        record = {"step": self.step, "epoch": self.epoch, "fid": fid, "mifid": mifid, "seconds": round(seconds, 2)}
        self.evaluations.append(record)
        if improved:
            if self.rank == 0:
                self.save_best(record)
            self.best = record
        self.evaluated_at = time.monotonic()
        spent = sum(e["seconds"] for e in self.evaluations)
        share = (f"{100 * spent / self.train_seconds:.1f}% of the training time" if self.train_seconds >= SHARE_AFTER_SECONDS
                 else f"{spent:.1f} s (the training so far is too short for a share)")
        return (f"Evaluation at step {self.step:,}: FID {fid:.2f}, MiFID {mifid:.2f} ({evaluator.describe_reference}); "
                f"{seconds:.1f} s, evaluations so far {share}" + ("; the best yet, saved as checkpoints/best.pt"
                                                                  if improved else ""))

    def save_best(self, record: dict) -> None:
        """best.pt: the photo -> Monet generator, its config and `record`, in one file, so that its
        scores always describe its weights."""
        weights = self.model.G_photo2monet.state_dict()
        write_checkpoint({"config": self.config.to_dict(), "networks": {"G_photo2monet": weights},
                          "evaluation": record}, self.best_path)

    def read_best(self, path: Path | None = None) -> dict | None:
        """The evaluation record of best.pt (or `path`); None when there is none, or, said in one
        line, when it cannot be read: the next evaluation then replaces it."""
        path = path or self.best_path
        if not path.exists():
            return None
        try:
            record = read_checkpoint(path, lazily=True).get("evaluation")
            if record is None:
                raise CheckpointError(f"checkpoint {path} holds no evaluation record (made before best.pt held one)")
            return record
        except CheckpointError as err:
            if self.rank == 0:
                print(f"Ignoring {err}; the next evaluation replaces it, and until then images.zip comes from the "
                      f"last weights")
            return None

    def carry_best(self, previous: Path) -> None:
        """A previous session's best.pt (beside the checkpoint resumed) as this run's own."""
        record = self.read_best(previous)
        if record:
            write_atomically(self.best_path, lambda tmp: shutil.copyfile(previous, tmp), "checkpoint")
            self.best = record
            print(f"Carried on from {previous}: the best so far, step {record['step']:,}, FID {record['fid']:.2f}")

    def submission_generator(self) -> torch.nn.Module:
        """The photo -> Monet generator that writes images.zip: best.pt's when `submit_from` is
        "best" and an evaluation saved one, else the generator as trained last. Says which."""
        if self.config.submit_from == "best" and self.best:
            try:
                generator, _ = load_generator(self.best_path, device=str(self.device))
                print(f"Submitting the generator of {self.best_path}: step {self.best['step']:,}, FID "
                      f"{self.best['fid']:.2f} (training went on to step {self.step:,})")
                return generator
            except CheckpointError as err:
                print(f"Ignoring {err}")
                self.best = None
        if self.config.submit_from == "latest":
            why = "submit_from='latest'"
        elif not self.config.evaluates:
            why = "no evaluations to choose from: eval_every, eval_steps and eval_minutes are 0"
        else:
            why = "no readable best.pt"
        print(f"Submitting the generator as trained last, step {self.step:,} ({why})")
        return self.model.G_photo2monet

    def checkpoint_due(self) -> bool:
        """`checkpoint_minutes` since the last save: a slow run, or a session that ends, loses at most that."""
        return bool(self.config.checkpoint_minutes) and (
            time.monotonic() - self.saved_at >= self.config.checkpoint_minutes * 60)

    def state_dict(self) -> dict:
        """Everything a resumed run needs; `pools` holds every process's pools (a collective call)."""
        model = self.model.state_dict()
        return {
            "config": self.config.to_dict(), **model, "pools": gather(model["pools"]),  # by rank
            "sched_G": self.sched_G.state_dict(), "sched_D": self.sched_D.state_dict(),
            "rng": gather(rng_state(self.device)),  # every process's own streams, by rank
            "step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step,
            "train_seconds": self.train_seconds, "history": self.history, "evaluations": self.evaluations,
            "plan": asdict(self.plan) if self.plan else None,
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Called by every process; process 0 writes."""
        state, path = self.state_dict(), Path(path or self.checkpoint_path)
        if self.rank == 0:
            write_checkpoint(state, path)
            self.config.save(path.parent / "config.json")
        self.saved_at = time.monotonic()
        return path

    def load(self, path: str | os.PathLike) -> None:
        state = read_checkpoint(path)
        check_architecture(state["config"], self.config, path)
        # Checkpoints before distributed training held one process's pools as pool_monet/pool_photo.
        pools = state.get("pools") or [{"monet": state["pool_monet"], "photo": state["pool_photo"]}]
        mine = pools[self.rank % len(pools)]  # exact when resumed with as many processes as it was saved by
        self.model.load_state_dict({**state, "pools": mine}, path)
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        self.processes = len(pools)  # who trained it: torchrun's workers, for the notebook
        restore_rng(state, self.rank, self.device)
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.train_seconds, self.history = state["train_seconds"], state["history"]
        self.evaluations = state.get("evaluations", [])
        self.best = self.read_best()
        if state.get("plan"):
            self.apply_plan(TimePlan(**state["plan"]))

    def metrics(self) -> dict:
        """What a run is compared by: mean losses over the last tenth of the steps and over
        the whole run, steps, completed epochs, training time and device."""
        if not self.history:
            raise ValueError("no training steps recorded yet")
        tail = self.history[-max(1, len(self.history) // 10):]
        mean = lambda records, name: sum(r[name] for r in records) / len(records)  # noqa: E731
        return {
            "steps": self.step, "epochs_completed": self.epoch, "train_seconds": round(self.train_seconds, 2),
            "seconds_per_step": round(self.train_seconds / max(1, self.step), 4),  # skipped steps took time too
            "device": str(self.device), "processes": self.processes, "speed": asdict(self.speed),
            "skipped_steps": self.model.skipped_total, "time_plan": asdict(self.plan) if self.plan else None,
            "out_of_time": self.out_of_time,
            "evaluations": self.evaluations,
            "best_evaluation": self.best,
            "final": {name: mean(tail, name) for name in self.model.loss_names},
            "mean": {name: mean(self.history, name) for name in self.model.loss_names},
        }
