"""Speed settings: mixed precision, memory layout, torch.compile, fused Adam, data path.

`resolve_speed` turns the config's "auto" values into concrete choices for a device. The CPU
choices come from `benchmarks/bench_train.py` on a 2-core AVX-512 machine with native bf16 (see
docs/performance.md): bf16 autocast 2.2-2.5x; fused Adam 1.05x at 64x64 but 0.94x at 256x256 (noise level);
channels_last 0.79-0.98x (InstanceNorm converts the layout back); compile 0.94-1.01x. The CUDA
choices follow the hardware, read from the compute capability of the training device and nothing
else: bf16 from 8.0 (Ampere and newer: A100, L4, H100), fp16 with a gradient scaler before that
(T4 7.5, V100 7.0), torch.compile from 7.0 (Triton's minimum), and not of bf16 below 8.0.

Calls not trusted, and why: `torch.cuda.is_bf16_supported()` returns True on a T4 (its default
`including_emulation=True` only checks that a bf16 tensor can be made), although a T4 has no bf16
tensor cores and Triton cannot compile bf16 for sm_75 (pytorch issue 118122).
`torch.cuda.get_device_capability()` without an argument reads the current device, which need
not be the training device. Trusted: `get_device_capability(device)` ((7, 5) on a T4, (9, 0) on an
H100); `get_arch_list()`, the build's sm_* kernels (sm_75 up to sm_120 in the cu128 builds, so a
P100's 6.0 is refused up front); `Adam(fused=True)` and the fp16 GradScaler, which run on both.
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError, CycleGANConfig


@dataclass(frozen=True)
class SpeedSettings:
    amp: str  # "off", "bf16", "fp16"
    channels_last: bool
    compile: bool
    fused_adam: bool
    data_path: str  # "memory" or "loader"
    norm: str  # "instance" or "group"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else the CPU; a CUDA device that is not there is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = torch.device(name).index or 0
        if index >= count:
            seen = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(f"config 'device' is {name!r} but torch sees {seen}; use 'auto' or 'cpu'")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX (Linux flags). Without them bf16 is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


# Native bf16 (tensor cores, Triton support) starts with Ampere.
BF16_CAPABILITY = (8, 0)
# Triton, and so torch.compile's GPU code, needs Volta or newer.
COMPILE_CAPABILITY = (7, 0)


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) of the training device itself; (0, 0) off CUDA."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else (0, 0)


def resolve_speed(config: CycleGANConfig, device: torch.device) -> SpeedSettings:
    on_cuda = device.type == "cuda"
    capability = cuda_capability(device)

    def choose(value: str, auto: bool) -> bool:
        return auto if value == "auto" else value == "on"

    if config.amp != "auto":
        amp = config.amp
    elif on_cuda:
        amp = "bf16" if capability >= BF16_CAPABILITY else "fp16"
    else:
        amp = "bf16" if cpu_has_native_bf16() else "off"
    if amp == "fp16" and not on_cuda:
        raise ConfigError("config 'amp' is 'fp16', which needs a CUDA device; on the CPU use 'bf16' or 'off'")
    compile_wanted = choose(config.compile, on_cuda)
    if compile_wanted and on_cuda:
        version = "%d.%d" % capability
        if capability < COMPILE_CAPABILITY:
            print(f"torch.compile needs compute capability 7.0+ (this GPU has {version}): running eagerly.")
            compile_wanted = False
        elif amp == "bf16" and capability < BF16_CAPABILITY:
            print(f"torch.compile cannot compile bf16 for compute capability {version} (Triton needs 8.0+): "
                  "running eagerly; amp='fp16' is this GPU's fast precision.")
            compile_wanted = False
    # Measured 0.79-1.04x on CPU; on GPUs it pays with fp16/bf16 tensor cores: an explicit choice.
    channels_last = choose(config.channels_last, False)
    return SpeedSettings(
        amp=amp,
        channels_last=channels_last,
        # InstanceNorm2d drops channels_last (PyTorch issue 72341) and, in that layout, gave
        # gradients 1.5% off the reference here (cf. issue 111824); GroupNorm(C, C) is the same
        # normalisation, keeps the layout, and matches to 5e-6.
        norm="group" if channels_last else config.norm,
        compile=compile_wanted,
        fused_adam=choose(config.fused_adam, on_cuda),  # one kernel launch for all parameters
        data_path=config.data_path if config.data_path != "auto" else "memory",
    )


def autocast(settings: SpeedSettings, device: torch.device):
    """Mixed precision for the forward passes; a no-op context when amp is off."""
    if settings.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=settings.autocast_dtype)


def inference_autocast(device: torch.device):
    """Translating images: half precision on a GPU (bf16 from compute capability 8.0, else fp16),
    half the memory and the GPU's fast path; fp32 on the CPU, where bf16 would only change pixels."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cuda_capability(device) >= BF16_CAPABILITY else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def make_grad_scaler(settings: SpeedSettings, device: torch.device) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    One scaler serves both optimizers: each is stepped through it, then one update per step."""
    return torch.amp.GradScaler(device.type, enabled=settings.amp == "fp16")


def accelerate(networks: dict[str, torch.nn.Module], settings: SpeedSettings, device: torch.device) -> None:
    """cuDNN's autotuner on a GPU (fixed input sizes: it picks the fastest kernels once), and
    torch.compile of each network in place when `settings` ask for it."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for name, net in networks.items():
        compile_network(net, settings, name)


def compile_network(net: torch.nn.Module, settings: SpeedSettings, name: str) -> None:
    """torch.compile in place (`nn.Module.compile`): the state_dict keys stay as they are, so
    checkpoints move freely between compiled and eager runs. A graph that fails to compile runs
    eagerly instead of stopping training, and one line says so: which network, the error."""
    if not settings.compile:
        return
    torch._dynamo.config.suppress_errors = True  # failures while tracing: dynamo's warning, and our line
    if not any(isinstance(h, CompileFailureLine) for h in DYNAMO_LOG.handlers):
        DYNAMO_LOG.addHandler(CompileFailureLine())
    net.compile(backend=inductor_or_eager(name))


def inductor_or_eager(name: str):
    """A torch.compile backend: inductor's code for each graph, or, when inductor fails on it, the
    graph as it is (eager), with one line naming the network."""
    def backend(graph: torch.fx.GraphModule, example_inputs):
        from torch._inductor.compile_fx import compile_fx  # what the "inductor" backend calls
        try:
            return compile_fx(graph, example_inputs)
        except Exception as err:  # noqa: BLE001 - any failure of the compiler leaves the maths to eager
            print(f"torch.compile failed for {name} ({_first_line(err)}): {name} runs eagerly", file=sys.stderr,
                  flush=True)
            return graph.forward
    return backend


DYNAMO_LOG = logging.getLogger("torch._dynamo.convert_frame")


class CompileFailureLine(logging.Handler):
    """dynamo with `suppress_errors` logs a frame it could not trace as a warning page and runs it
    eagerly; this prints the one line that matters, once per frame."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"WON'T CONVERT (\S+ \S+ line \d+)", record.getMessage())
        if not found or found[1] in self.seen:
            return
        self.seen.add(found[1])
        error = record.exc_info[1] if record.exc_info else None
        print(f"torch.compile could not trace {found[1]} ({_first_line(error)}): that code runs eagerly",
              file=sys.stderr, flush=True)


def _first_line(error) -> str:
    text = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_accelerator(device: str = "auto") -> str:
    """One line on the device training will use; raises a clear error when the GPU cannot
    run this PyTorch build (Kaggle's P100, compute capability 6.0, has no kernels in recent
    builds, and its first CUDA operation would otherwise fail deep inside training)."""
    if device == "cpu" or not torch.cuda.is_available():
        return (f"PyTorch {torch.__version__}. No GPU: training runs on the CPU (slow at 256x256; on Kaggle "
                "pick a GPU accelerator).")
    cuda = torch.device("cuda" if device == "auto" else device)
    major, minor = cuda_capability(cuda)
    name, built_for = torch.cuda.get_device_name(cuda), torch.cuda.get_arch_list()
    # "sm_75", "sm_90a", "compute_120": the digits are the capability, a letter after them a feature set.
    supported = {int(found[1]) for arch in built_for if (found := re.match(r"(?:sm|compute)_(\d+)", arch))}
    if supported and major * 10 + minor < min(supported):
        raise RuntimeError(
            f"{name} (compute capability {major}.{minor}) is not supported by the installed PyTorch "
            f"{torch.__version__}, built for {', '.join(built_for)}. On Kaggle choose the accelerator "
            "'GPU T4 x2' in the notebook settings (or run on the CPU); on Colab, a T4 or newer.")
    compile_note = "" if major >= 7 else " torch.compile needs compute capability 7.0+, so it stays off."
    return f"PyTorch {torch.__version__}. GPU: {name} (compute capability {major}.{minor}).{compile_note}"
