"""Start training as `config.gpus` asks: in this process on one device, or data-parallel with one
torchrun worker per device.

    python -m monet_utils train -p gpus 2 --data-dir data/gan-getting-started -p epochs 10

From a notebook or that command, several processes are launched as a child `torchrun`
(`monet_utils.torchrun`, a Jupyter kernel cannot host the workers itself), whose workers run this
module (`python -m monet_utils.launch --config C`). Their output streams to the caller; Ctrl-C,
Jupyter's interrupt or SIGTERM stop them after the same step with one checkpoint and one line
saying which, as a one-process run does. The package is found where this one was imported from,
so the self-contained Kaggle notebook's inlined copy works too.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import torch

from .checkpoints import CheckpointError, interrupted_message
from .config import ConfigError, CycleGANConfig, parse_value, write_json
from .data import DataError, build_dataset, check_data_fits, find_data_dir
from .distributed import check_batch_split, init_process_group
from .evaluation import Evaluator, check_fid_weights
from .time_budget import SESSION_STARTED_ENV, session_started
from .torchrun import stop_with_parent
from .training import CycleGANTrainer, TrainingInterrupted

WORLD_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
LAUNCHED_ENV = "MONET_UTILS_LAUNCHED"  # set for workers whose launcher says how a run stopped


class WorkerError(RuntimeError):
    """A training worker failed; torchrun stopped the others."""


def under_torchrun() -> bool:
    return all(name in os.environ for name in WORLD_ENV)


def process_count(config: CycleGANConfig) -> int:
    """How many training processes `config.gpus` asks for on this machine; a clear error when
    it asks for more GPUs than torch sees."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_cpu = config.device == "cpu" or (config.device == "auto" and not visible)
    if torch.device(config.device if config.device != "auto" else "cpu").index is not None:
        # cuda:N names one device (a sweep gives each parallel run its own): one process on it.
        if config.gpus not in ("auto", 1):
            raise ConfigError(f"config 'gpus' is {config.gpus} but 'device' is {config.device!r}, one device; "
                              "use device='cuda' (or 'auto') to train on several")
        return 1
    if config.gpus == "auto":
        return 1 if on_cpu else max(1, visible)
    wanted = int(config.gpus)
    if not on_cpu and wanted > visible:
        raise ConfigError(f"config 'gpus' is {wanted} but torch sees {visible} CUDA device(s)")
    if on_cpu and wanted > 1 and config.device != "cpu":
        raise ConfigError(f"config 'gpus' is {wanted} but torch sees no CUDA device; set device='cpu' to "
                          f"train with {wanted} CPU processes")
    check_batch_split(config, wanted)
    return wanted


def train(trainer: CycleGANTrainer, dataset, stream=None) -> list[dict]:
    """The notebook's training cell: in this process on one device, else with torchrun workers,
    after which `trainer` loads the checkpoint they wrote. Returns the loss history."""
    nproc = process_count(trainer.config)
    if nproc == 1:
        return trainer.fit(trainer.train_loader(dataset), evaluator=Evaluator.for_run(trainer.config, dataset,
                                                                                       trainer.device))
    print(f"Training with {nproc} processes (torchrun); their output follows.")
    with off_the_device(trainer):  # the workers need GPU 0's memory more than this copy does
        launch_workers(trainer.config, nproc, stream)
    trainer.load(trainer.checkpoint_path)
    return trainer.history


@contextlib.contextmanager
def off_the_device(trainer: CycleGANTrainer):
    """The trainer's networks in CPU memory meanwhile (its optimizers hold no state before a
    step), and the GPU's cached blocks given back."""
    held = trainer.model.networks.values()
    for net in held:
        net.to("cpu")
    if trainer.device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        yield
    finally:
        for net in held:
            net.to(trainer.device)


def train_from_config(config: CycleGANConfig) -> None:
    """`python -m monet_utils train`: a worker under torchrun; else as many processes as `gpus` asks."""
    if under_torchrun():
        return run_worker(config)
    nproc = process_count(config)
    check_data_fits(config)
    check_fid_weights(config)
    if nproc == 1:
        return run_worker(config)
    print(f"Training with {nproc} processes (torchrun); their output follows.", file=sys.stderr, flush=True)
    launch_workers(config, nproc, sys.stderr)


def run_worker(config: CycleGANConfig, progress: bool = True) -> None:
    """Train with `config`: under torchrun one worker, which joins the group and trains its share
    (rank 0 writing the checkpoint and metrics) and stops when its launcher is gone; outside it,
    one process on config.device."""
    import torch.distributed as dist

    distributed = under_torchrun()
    device = None
    if distributed:
        stop_with_parent()
        device = init_process_group(config)
    try:
        dataset = build_dataset(config, find_data_dir(config.data_dir))
        trainer = CycleGANTrainer(config, device=device)
        evaluator = Evaluator.for_run(config, dataset, trainer.device, trainer.rank)
        trainer.fit(trainer.train_loader(dataset), progress=progress, evaluator=evaluator)
        if trainer.rank == 0:
            write_json(Path(config.output_dir) / "metrics.json", trainer.metrics())
        if distributed:
            dist.barrier()  # leave together: gloo aborts a process whose peer is still mid-collective
    finally:
        if distributed:
            dist.destroy_process_group()


def launch_workers(config: CycleGANConfig, nproc: int, stream=None) -> None:
    """Train with `nproc` torchrun workers in a child process, their output streamed to `stream`
    as it comes. SIGINT (Ctrl-C, Jupyter's interrupt) or SIGTERM here is forwarded once to the
    child, in a session of its own: the workers stop after one step with a checkpoint, and this
    raises TrainingInterrupted. A second one stops the child at once; its workers, whose parent
    is then gone, still stop after their step with a checkpoint."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "launch_config.json"
    config.save(config_file)
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHED_ENV: "1", SESSION_STARTED_ENV: str(session_started()),
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    if config.device == "cpu":  # each process its share of the cores: two using all of them run 5-15x slower
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    command = [sys.executable, "-m", "monet_utils.torchrun", "--parent", str(os.getpid()), "--standalone",
               f"--nproc_per_node={nproc}", "-m", "monet_utils.launch", "--config", str(config_file)]
    stream = stream or sys.stdout
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1, start_new_session=True)
    tail: list[str] = []
    forwarded = None
    with _signals_as_interrupt():
        while True:
            try:
                if not child.stdout.closed:
                    for line in child.stdout:  # to the end: the workers' last lines come after a stop
                        stream.write(line)
                        stream.flush()
                        tail = (tail + [line])[-40:]
                    child.stdout.close()
                child.wait()
                break
            except KeyboardInterrupt as interrupt:
                if forwarded:
                    child.kill()
                else:
                    forwarded = getattr(interrupt, "signal_name", "SIGINT")
                    child.send_signal(signal.SIGINT)
    if forwarded or child.returncode == 128 + signal.SIGINT:
        raise TrainingInterrupted(interrupted_message(forwarded or "SIGINT", out))
    if child.returncode:
        said = [line.strip() for line in tail if line.startswith("error: ")]
        raise WorkerError(said[-1].removeprefix("error: ") if said else
                          f"training with {nproc} processes failed (exit code {child.returncode}):\n" + "".join(tail))


@contextlib.contextmanager
def _signals_as_interrupt():
    """SIGINT and SIGTERM (`kill`) handled as Ctrl-C while workers run: forwarded, not the end of
    this process with the workers left behind. SIGINT gets its handler here too: a process started
    with SIGINT ignored (`command &` in a script, some CI runners) has no KeyboardInterrupt from
    Python. Handlers can only be set from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        error = KeyboardInterrupt()
        error.signal_name = signal.Signals(signum).name
        raise error

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="a config JSON file (a run's config.json); -p's values go over it (default: none)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with photo_jpg/ and monet_jpg/ (default: searched, as above)")
    parser.add_argument("--output-dir", default=None,
                        help="where the run's files go (default: outputs, or the config file's output_dir)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a config field's value, e.g. -p epochs 3 -p gpus 2; repeat for more")


def argument_values(args) -> dict:
    """The values `add_config_arguments` took: a --config file's (a run's config.json), then -p's."""
    values = CycleGANConfig.load(args.config).to_dict() if args.config else {}
    return {**values, **{name: parse_value(value) for name, value in args.parameter}}


def config_from_arguments(args) -> CycleGANConfig:
    values = argument_values(args)
    values.update({name: value for name, value in (("data_dir", args.data_dir), ("output_dir", args.output_dir))
                   if value is not None})
    return CycleGANConfig.from_dict(values)


def main(argv=None) -> int:
    """The worker entry point, run by torchrun: `-m monet_utils.launch --config C [-p NAME VALUE ...]`.
    Errors are one line (rank 0's), as `python -m monet_utils` prints them."""
    parser = argparse.ArgumentParser(prog="monet_utils.launch", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        run_worker(config_from_arguments(parser.parse_args(argv)))
    except TrainingInterrupted as err:
        if rank0 and LAUNCHED_ENV not in os.environ:  # every worker stopped at the same step
            print(err, file=sys.stderr)
        return 130
    except (ConfigError, DataError, CheckpointError, OSError) as err:
        if rank0:
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def exit_process(code: int) -> None:
    """sys.exit(code); a torchrun worker leaves without the interpreter's teardown, once its output
    is flushed. After destroy_process_group, torch's C++ threads sometimes abort that teardown
    ("terminate called without an active exception": 5 runs in 90 of two gloo processes here, torch
    2.10 and 2.14), and torchrun then reports a run that trained and saved as failed."""
    if under_torchrun():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_process(main())
