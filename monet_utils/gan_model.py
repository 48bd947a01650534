"""What the two models (`cyclegan.CycleGAN`, `cut.CUT`) share: networks on the device in the
run's memory layout, discriminators judging through DiffAugment, the fp16 loss scaler, steps
skipped for a non-finite loss, and the checkpoint state of networks and optimizers. The maths of a
step is each model's own.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .acceleration import SpeedSettings, make_grad_scaler
from .checkpoints import load_network
from .config import CycleGANConfig
from .diffaugment import diff_augment
from .distributed import mean_over_ranks
from .losses import GANLoss
from .models import init_weights


class NonFiniteLossError(FloatingPointError):
    """Losses stayed inf/nan for `max_skipped_steps` steps in a row: training diverged."""


# How Adam computes, chosen by this run for its device: a saved state must not bring back another
# run's (a fused run resumed from a non-fused checkpoint would send the scaler's grad_scale to
# the foreach implementation, which refuses it).
IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """`load_state_dict` with this run's implementation flags in place of the saved ones: it places
    each `step` counter by the flags it loads (fused or capturable Adam's on the parameters' device,
    the others' left on the CPU), so a CPU run resumed fused on a GPU failed its first step, and a
    fused run resumed unfused synced once per parameter per step."""
    ours = [{flag: group[flag] for flag in IMPLEMENTATION_FLAGS if flag in group} for group in optimizer.param_groups]
    optimizer.load_state_dict({**saved, "param_groups": [{**group, **flags}
                                                         for group, flags in zip(saved["param_groups"], ours)]})


def process_seed(seed: int, rank: int) -> int:
    """The seed of process `rank`'s random streams after initialisation; rank 0 keeps `seed`'s."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]) if rank else seed


def all_finite(values: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())


def set_requires_grad(nets, requires_grad: bool) -> None:
    for net in nets:
        net.requires_grad_(requires_grad)


class GANModel:
    """A subclass sets `networks` (name -> module, on the device), `opt_G` and `opt_D` (which the
    trainer's LR schedules drive), `loss_names` and `progress_losses` (the two the progress bar
    shows), and implements `train_step(real_photo,
    real_monet) -> {loss name: value}`. `replicas` is what a step calls for each network: the
    network, or its DistributedDataParallel replica (`distributed.replicate`)."""

    G_monet2photo: torch.nn.Module | None = None  # CycleGAN's way back; CUT has none

    def __init__(self, config: CycleGANConfig, device: torch.device, speed: SpeedSettings):
        self.config, self.device, self.speed = config, device, speed
        self.scaler = make_grad_scaler(speed, device)
        self.gan_loss = GANLoss(config.gan_mode)
        self.skipped_in_a_row = self.skipped_total = 0  # steps dropped for a non-finite loss

    def adam(self, params) -> torch.optim.Adam:
        cfg = self.config
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=self.speed.fused_adam or None)

    def placed(self, net: torch.nn.Module) -> torch.nn.Module:
        """`net` with the reference's initial weights, on the device in the run's memory layout."""
        return init_weights(net, self.config.init_gain).to(self.device, memory_format=self.memory_format)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.speed.channels_last else torch.contiguous_format

    def on_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, memory_format=self.memory_format, non_blocking=True)

    def judge(self, net, images: torch.Tensor) -> torch.Tensor:
        """A discriminator's verdict on `images`, through DiffAugment when the config asks for it."""
        return net(diff_augment(images, self.config.diffaugment))

    def discriminator_loss(self, net, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Real images judged real and (detached) fakes judged fake, halved to slow D relative to G."""
        return 0.5 * (self.gan_loss(self.judge(net, real), True) + self.gan_loss(self.judge(net, fake.detach()), False))

    def global_losses(self, losses: dict[str, torch.Tensor], names) -> dict[str, float]:
        """The global batch's `names` losses (one device sync): every process then takes the same
        decision on skipping."""
        return dict(zip(names, mean_over_ranks(torch.stack([losses[n].detach().float() for n in names])).tolist()))

    def skip_step(self, values: dict[str, float]) -> None:
        """Count a step whose losses were not finite (its optimizers did not step); with fp16 the
        loss scale backs off. Too many in a row is NonFiniteLossError."""
        self.skipped_in_a_row += 1
        self.skipped_total += 1
        if self.scaler.is_enabled():
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        if self.skipped_in_a_row >= self.config.max_skipped_steps:
            raise NonFiniteLossError(
                f"losses were not finite for {self.skipped_in_a_row} steps in a row (last: {bad}); those "
                f"steps' updates were skipped and the last checkpoint is intact. Lower lr, or try amp='off' "
                f"(now {self.speed.amp!r}).")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}

    def state_dict(self) -> dict:
        """Weights, optimizers, this process's pools (`pools`), the loss scale."""
        return {"networks": {name: net.state_dict() for name, net in self.networks.items()},
                **{name: opt.state_dict() for name, opt in self.optimizers().items()},
                "pools": self.pools_state(), "scaler": self.scaler.state_dict(), "skipped_total": self.skipped_total}

    def load_state_dict(self, state: dict, path) -> None:
        """What `state_dict` saved (`path` names the checkpoint in errors)."""
        for name, net in self.networks.items():
            load_network(net, state["networks"][name], name, path)
        for name, optimizer in self.optimizers().items():
            load_optimizer(optimizer, state[name])
        self.load_pools(state["pools"])
        if state["scaler"]:  # {} from a run without fp16: a T4 resuming an A100's run starts a fresh scale
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_total = state["skipped_total"]

    def pools_state(self) -> dict:
        return {}

    def load_pools(self, state: dict) -> None:
        pass
