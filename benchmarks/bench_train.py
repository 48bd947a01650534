"""Training-step speed under each speed setting, and of CUT and FastCUT, against the reference
(CycleGAN) in the same run.

    .venv/bin/python benchmarks/bench_train.py --size 64 --batch 4             # CPU, a few minutes
    .venv/bin/python benchmarks/bench_train.py --size 256 --batch 1 --steps 5
    .venv/bin/python benchmarks/bench_train.py --size 256 --batch 4 --device cuda
    .venv/bin/python benchmarks/bench_train.py --size 64 --batch 4 --nproc 2 --only reference   # data-parallel
    .venv/bin/python benchmarks/bench_train.py --size 256 --batch 4 --steps 3 --only CUT,FastCUT   # the models

Reference = fp32, contiguous, eager, plain (foreach) Adam, InstanceNorm: the core implementation.
Each row runs in its own process (clean peak memory, no compile cache shared): median step time
after warm-up, images/s (photo+painting pairs), ratio to the reference, the first step (which
pays for compilation), peak memory (CUDA peak allocated; on CPU the process's peak RSS). Then the
data paths' images/s. With --nproc N: images/s of torchrun training with 1 and with N processes
(the global batch --batch split over them, DDP as in `monet_utils.distributed`), and the ratio.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REFERENCE = dict(amp="off", channels_last="off", compile="off", fused_adam="off", norm="instance")
CONFIGS = {
    "reference": {},
    "amp bf16": dict(amp="bf16"),
    "amp fp16 (CUDA only)": dict(amp="fp16"),
    "GroupNorm": dict(norm="group"),
    "channels_last (uses GroupNorm)": dict(channels_last="on"),
    "fused Adam": dict(fused_adam="on"),
    "torch.compile": dict(compile="on"),
    "amp bf16 + torch.compile": dict(amp="bf16", compile="on"),
    "defaults for this device (auto)": dict(amp="auto", channels_last="auto", compile="auto", fused_adam="auto"),
    # The other model family (cut.py), reference speed settings: the same size, the ratio to CycleGAN's.
    "CUT": dict(model="cut"),
    "FastCUT": dict(model="fastcut"),
}


def measure(settings: dict, args) -> dict:
    from monet_utils.config import CycleGANConfig
    from monet_utils.training import CycleGANTrainer

    config = CycleGANConfig(image_size=args.size, batch_size=args.batch, device=args.device, ngf=args.ngf,
                            ndf=args.ngf, n_res_blocks=args.blocks, generator=args.generator,
                            **{**REFERENCE, **settings})
    trainer = CycleGANTrainer(config)
    generator = torch.Generator().manual_seed(0)
    photo, monet = (torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1 for _ in "ab")
    cuda = trainer.device.type == "cuda"
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        trainer.model.train_step(photo, monet)  # ends in a device sync (the losses are read)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"median_s": statistics.median(times[args.warmup:]), "first_s": times[0], "peak_bytes": peak,
            "speed": str(trainer.speed)}


def ddp_worker(args) -> None:
    """One torchrun process: fixed random batches of its share of the global batch, timed on rank 0."""
    from monet_utils.config import CycleGANConfig
    from monet_utils.distributed import init_process_group
    from monet_utils.training import CycleGANTrainer
    import torch.distributed as dist

    config = CycleGANConfig(image_size=args.size, batch_size=args.batch, device=args.device, ngf=args.ngf,
                            ndf=args.ngf, n_res_blocks=args.blocks, **REFERENCE)
    device = init_process_group(config)
    trainer = CycleGANTrainer(config, device=device)
    share = args.batch // dist.get_world_size()
    generator = torch.Generator().manual_seed(dist.get_rank())
    photo, monet = (torch.rand(share, 3, args.size, args.size, generator=generator) * 2 - 1 for _ in "ab")
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        trainer.model.train_step(photo, monet)  # the losses' all-reduce ends every step on every process
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(json.dumps({"median_s": statistics.median(times[args.warmup:])}))
    dist.destroy_process_group()


def ddp_scaling(args) -> None:
    """Images/s with 1 and with args.nproc torchrun processes, the same global batch."""
    import os
    rates = {}
    for nproc in (1, args.nproc):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   __file__, "--ddp-worker"] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                                if k in ("size", "batch", "steps", "warmup", "ngf", "blocks", "device")]
        env = dict(os.environ)
        if args.device == "cpu":  # each process its share of the cores, as monet_utils.distributed does
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            print(f"{nproc} process(es): failed\n{done.stdout[-1500:]}{done.stderr[-1500:]}", file=sys.stderr)
            return
        rates[nproc] = args.batch / json.loads(done.stdout.strip().splitlines()[-1])["median_s"]
    print(f"\n| processes ({args.device}) | global batch | images/s | vs 1 process |\n|---:|---:|---:|---:|")
    for nproc, rate in rates.items():
        print(f"| {nproc} | {args.batch} | {rate:.2f} | {rate / rates[1]:.2f}x |")
    if args.device == "cpu":
        print("\nOn a CPU the processes share the same cores: this ratio says nothing about GPUs.")


def data_path_speed(args) -> list[tuple[str, float]]:
    """Images/s of each data path over synthetic 256x256 JPEGs, batches moved to the device."""
    from monet_utils.config import CycleGANConfig
    from monet_utils.data import build_dataset, make_train_loader
    from monet_utils.demo_data import make_demo_dataset

    from monet_utils.acceleration import resolve_device

    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_dataset(Path(tmp), n_photos=args.data_images, n_paintings=32, progress=False)
        for path, workers in (("loader", 0), ("loader", 2), ("memory", 0)):
            config = CycleGANConfig(image_size=args.size, batch_size=args.batch, num_workers=workers)
            dataset = build_dataset(config, root)
            start = time.perf_counter()
            loader = make_train_loader(config, dataset, path, device)
            setup = time.perf_counter() - start
            start = time.perf_counter()
            for photo, monet in loader:
                photo, monet = photo.to(device, non_blocking=True), monet.to(device, non_blocking=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            label = path + (f", {workers} workers" if path == "loader" else f" (decoded once in {setup:.1f} s)")
            rows.append((label, loader.steps_per_epoch * args.batch / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--generator", default="resnet", choices=("resnet", "unet"))
    parser.add_argument("--only", default=None, help="comma-separated row names to run")
    parser.add_argument("--data-images", type=int, default=256, help="photos for the data-path measurement")
    parser.add_argument("--nproc", type=int, default=0, help="also measure torchrun with 1 and NPROC processes")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one config
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)  # internal: one torchrun process
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(json.loads(args.one), args)))
        return
    if args.ddp_worker:
        ddp_worker(args)
        return

    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.generator}, "
          f"{args.size}x{args.size} batch {args.batch}, ngf {args.ngf}, {args.blocks} blocks, "
          f"median of {args.steps} steps after {args.warmup} warm-up\n")
    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    if "reference" not in names:
        names.insert(0, "reference")
    results = {}
    for name in names:
        if "CUDA only" in name and args.device == "cpu":
            continue
        command = [sys.executable, __file__, "--one", json.dumps(CONFIGS[name])] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("one", "only", "nproc", "ddp_worker") and v is not None]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            results[name] = None
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = results["reference"]["median_s"]
    print(f"| {'configuration':<32} | step (s) | images/s | vs reference | first step (s) | peak memory (MB) |")
    print(f"|{'-' * 34}|---------:|---------:|-------------:|---------------:|-----------------:|")
    for name, result in results.items():
        if result is None:
            print(f"| {name:<32} | failed |  |  |  |  |")
            continue
        step = result["median_s"]
        print(f"| {name:<32} | {step:8.3f} | {args.batch / step:8.2f} | {reference / step:11.2f}x | "
              f"{result['first_s']:14.1f} | {result['peak_bytes'] / 2**20:16.0f} |")
    if "defaults for this device (auto)" in results and results["defaults for this device (auto)"]:
        print(f"\nauto resolved to: {results['defaults for this device (auto)']['speed']}")
    print(f"\n| {'data path':<40} | images/s |\n|{'-' * 42}|---------:|")
    for label, rate in data_path_speed(args):
        print(f"| {label:<40} | {rate:8.1f} |")
    if args.nproc > 1:
        ddp_scaling(args)


if __name__ == "__main__":
    main()
