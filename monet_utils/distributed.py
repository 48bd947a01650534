"""Data-parallel training on torch.distributed: one process per device, launched by torchrun.

    torchrun --nproc_per_node=2 -m monet_utils train -p data_dir ../gan-getting-started -p epochs 5

`batch_size` stays the global batch, split evenly over the processes; each process trains on
its share of every batch of the epoch's permutation (`EpochSampler`), so an epoch still covers
every photo once and the batches are those of a one-process run. DistributedDataParallel averages
the gradients, which for per-image InstanceNorm is the one-process step exactly. Image pools are
per process; rank 0 writes checkpoints, metrics and plots, and a checkpoint holds every process's
pool. NCCL on CUDA, gloo on CPU.

From a notebook, `train` trains in-process on one device and otherwise launches
`python -m torch.distributed.run ... -m monet_utils.distributed` as a child process: a Jupyter
kernel cannot host the workers itself (spawn cannot pickle functions defined in `__main__`).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .config import ConfigError, CycleGANConfig, parse_value

WORLD_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class WorkerError(RuntimeError):
    """A training worker failed; torchrun stopped the others."""


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def process_count(config: CycleGANConfig) -> int:
    """How many training processes `config.gpus` asks for on this machine; a clear error when
    it asks for more GPUs than torch sees."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_cpu = config.device == "cpu" or (config.device == "auto" and not visible)
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


def check_batch_split(config: CycleGANConfig, processes: int) -> None:
    if config.batch_size % processes:
        raise ConfigError(f"config 'batch_size' ({config.batch_size}) must divide evenly over {processes} processes")


def init_process_group(config: CycleGANConfig) -> torch.device:
    """Join torchrun's process group: NCCL with one GPU per process, or gloo on the CPU, where
    each process gets its share of the cores (two processes each using every core run 5-15x
    slower). Returns this process's device."""
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    wants_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        dist.init_process_group("gloo")
    check_batch_split(config, dist.get_world_size())
    return device


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`net` in its own DistributedDataParallel inside a process group, else itself."""
    if rank_and_world()[1] == 1:
        return net
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)


def any_rank(*flags: bool) -> list[bool]:
    """Each flag, true if it is true on any process: every process then stops or saves at the same step."""
    if rank_and_world()[1] == 1:
        return list(flags)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([float(f) for f in flags], device=backend_device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the processes: the global batch's losses."""
    if rank_and_world()[1] == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def gather(obj) -> list:
    """`obj` from every process, in rank order."""
    if rank_and_world()[1] == 1:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def run_worker(config: CycleGANConfig, progress: bool = True) -> None:
    """Train with `config`: under torchrun one worker, which joins the group and trains its share
    (rank 0 writing the checkpoint and metrics); outside it, one process on config.device."""
    from .config import write_json
    from .data import build_dataset, find_data_dir
    from .training import CycleGANTrainer

    under_torchrun = all(name in os.environ for name in WORLD_ENV)
    device = init_process_group(config) if under_torchrun else None
    try:
        dataset = build_dataset(config, find_data_dir(config.data_dir))
        trainer = CycleGANTrainer(config, device=device)
        trainer.fit(trainer.train_loader(dataset), progress=progress)
        if trainer.rank == 0:
            write_json(Path(config.output_dir) / "metrics.json", trainer.metrics())
        if under_torchrun:
            dist.barrier()  # leave together: gloo aborts a process whose peer is still mid-collective
    finally:
        if under_torchrun:
            dist.destroy_process_group()


def launch_workers(config: CycleGANConfig, nproc: int, stream=None) -> None:
    """Train with `nproc` torchrun workers in a child process, their output streamed to `stream`
    (the notebook cell) as it comes. The package is found where this one was imported from, so
    the self-contained Kaggle notebook's inlined copy works too."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "launch_config.json"
    config.save(config_file)
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    if config.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "monet_utils.distributed", "--config", str(config_file)]
    stream = stream or sys.stdout
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1)
    tail: list[str] = []
    try:
        for line in child.stdout:
            stream.write(line)
            stream.flush()
            tail = (tail + [line])[-40:]
        child.wait()
    except KeyboardInterrupt:  # Jupyter's interrupt: torchrun passes SIGINT on to its workers, which save
        child.send_signal(signal.SIGINT)
        child.wait()
        from .training import TrainingInterrupted
        raise TrainingInterrupted(f"SIGINT: the {nproc} training processes stopped after a step; checkpoint "
                                  f"{out / 'checkpoints' / 'latest.pt'} holds it, and a re-run resumes from there") from None
    if child.returncode:
        raise WorkerError(f"training with {nproc} processes failed (torchrun exit code {child.returncode}):\n"
                          + "".join(tail))


def train(trainer, dataset, stream=None) -> list[dict]:
    """Train as `config.gpus` asks: in this process on one device, else with torchrun workers,
    after which `trainer` loads the checkpoint they wrote. Returns the loss history."""
    nproc = process_count(trainer.config)
    if nproc == 1:
        return trainer.fit(trainer.train_loader(dataset))
    print(f"Training with {nproc} processes (torchrun); their output follows.")
    launch_workers(trainer.config, nproc, stream)
    trainer.load(trainer.checkpoint_path)
    return trainer.history


def main(argv=None) -> int:
    """The worker entry point: `torchrun ... -m monet_utils.distributed --config C [-p NAME VALUE ...]`."""
    parser = argparse.ArgumentParser(prog="monet_utils.distributed", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    run_worker(config_from_arguments(parser.parse_args(argv)))
    return 0


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="a config JSON file (config.json of a run)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a config value over the file's, e.g. -p epochs 3 -p data_dir ../data")


def config_from_arguments(args) -> CycleGANConfig:
    base = CycleGANConfig.load(args.config).to_dict() if args.config else {}
    return CycleGANConfig.from_dict({**base, **{name: parse_value(value) for name, value in args.parameter}})


if __name__ == "__main__":
    sys.exit(main())
