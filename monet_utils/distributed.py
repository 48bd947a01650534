"""Data-parallel training on torch.distributed: the process group and the collectives the
trainer uses, for one process per device (`launch` starts them with torchrun).

`batch_size` stays the global batch, split evenly over the processes; each process trains on
its share of every batch of the epoch's permutation (`EpochSampler`), so an epoch still covers
every photo once and the batches are those of a one-process run. DistributedDataParallel averages
the gradients, which for per-image InstanceNorm is the one-process step exactly. Image pools are
per process; rank 0 writes checkpoints, metrics and plots, and a checkpoint holds every process's
pool. NCCL on CUDA, gloo on CPU. Outside a process group every function here is the
one-process identity.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .config import ConfigError, CycleGANConfig


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
        gpus = torch.cuda.device_count()
        device = torch.device("cuda", local_rank % gpus)
        torch.cuda.set_device(device)
        if local_world > gpus:  # processes sharing a GPU (a test on one GPU): NCCL refuses that, gloo does not
            dist.init_process_group("gloo")
        else:
            dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        dist.init_process_group("gloo")
    check_batch_split(config, dist.get_world_size())
    return device


def replicate(networks: dict[str, torch.nn.Module], device: torch.device) -> dict[str, torch.nn.Module]:
    """Inside a process group, each network in its own DistributedDataParallel (so a generator step
    all-reduces only the generators' gradients, a discriminator step only theirs); else the networks."""
    if rank_and_world()[1] == 1:
        return dict(networks)
    ids = [device] if device.type == "cuda" else None
    # No buffer to broadcast: the networks' only ones are constant blur kernels (antialias), which
    # DDP would copy over in place at every forward, after which autograd refuses those it saved
    # for a backward that has not run yet (torch 2.10).
    return {name: torch.nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
            for name, net in networks.items()}


def any_rank(*flags: bool) -> list[bool]:
    """Each flag, true if it is true on any process: every process then stops or saves at the same step."""
    if rank_and_world()[1] == 1:
        return list(flags)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([float(f) for f in flags], device=backend_device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def from_first_rank(values: torch.Tensor) -> torch.Tensor:
    """Process 0's `values` on every process (a CPU tensor)."""
    if rank_and_world()[1] == 1:
        return values
    values = values.to("cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(values, src=0)
    return values.cpu()


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
