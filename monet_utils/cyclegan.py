"""The CycleGAN of Zhu et al. 2017 (arXiv:1703.10593) as the reference code trains it: two
generators, two discriminators, their optimizers, the history pools, and one training step.
No loop and no files here: `training.CycleGANTrainer` runs epochs of these steps and keeps them
in checkpoints.

Domain A is photos, B is Monet paintings. Update order and loss weights follow the reference
`cycle_gan_model.py`: generators first (adversarial + cycle + identity), then both
discriminators on real images and on fakes drawn from the history pools.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch.nn import functional as F

from .acceleration import SpeedSettings, autocast, make_grad_scaler
from .checkpoints import load_network
from .config import CycleGANConfig
from .diffaugment import diff_augment
from .distributed import mean_over_ranks
from .image_pool import ImagePool
from .losses import GANLoss
from .models import build_discriminator, build_generator, init_weights

LOSS_NAMES = (
    "adv_photo2monet", "adv_monet2photo",  # generators fooling D_monet / D_photo
    "cycle_photo", "cycle_monet",  # photo -> monet -> photo, monet -> photo -> monet
    "idt_photo2monet", "idt_monet2photo",  # each generator fed its own output domain
    "D_monet", "D_photo",
)


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


def set_requires_grad(nets, requires_grad: bool) -> None:
    for net in nets:
        net.requires_grad_(requires_grad)


class CycleGAN:
    """The four networks and their update. `train_step` is the whole interface a loop needs, with
    `state_dict`/`load_state_dict` for what a checkpoint keeps of it."""

    def __init__(self, config: CycleGANConfig, device: torch.device, speed: SpeedSettings, rank: int = 0):
        """`rank` is this process's in a distributed run: its pools and random streams are its own."""
        self.config, self.device, self.speed = config, device, speed
        torch.manual_seed(config.seed)  # the same initial weights in every process (DDP broadcasts rank 0's anyway)
        make_g = lambda: build_generator(config, norm=speed.norm)  # noqa: E731
        make_d = lambda: build_discriminator(config, norm=speed.norm)  # noqa: E731
        self.G_photo2monet, self.G_monet2photo = (
            init_weights(make_g(), config.init_gain).to(device, memory_format=self.memory_format) for _ in "ab")
        self.D_monet, self.D_photo = (
            init_weights(make_d(), config.init_gain).to(device, memory_format=self.memory_format) for _ in "ab")
        if rank:  # then streams of their own: DiffAugment must not draw the same for both halves of a batch
            torch.manual_seed(process_seed(config.seed, rank))
        # What the training step calls for each network: the network itself, or in a distributed run
        # the DistributedDataParallel replica that `distributed.replicate` puts in its place.
        self.replicas = dict(self.networks)
        adam = dict(lr=config.lr, betas=(config.beta1, config.beta2), fused=speed.fused_adam or None)
        self.opt_G = torch.optim.Adam(
            itertools.chain(self.G_photo2monet.parameters(), self.G_monet2photo.parameters()), **adam)
        self.opt_D = torch.optim.Adam(itertools.chain(self.D_monet.parameters(), self.D_photo.parameters()), **adam)
        self.scaler = make_grad_scaler(speed, device)
        pool_seed = config.seed + 1000 * rank  # each process keeps its own pools
        self.pool_monet = ImagePool(config.pool_size, seed=pool_seed)  # fake paintings for D_monet
        self.pool_photo = ImagePool(config.pool_size, seed=pool_seed + 1)
        self.gan_loss = GANLoss(config.gan_mode)
        self.skipped_in_a_row = self.skipped_total = 0  # steps dropped for a non-finite loss

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        return {"G_photo2monet": self.G_photo2monet, "G_monet2photo": self.G_monet2photo,
                "D_monet": self.D_monet, "D_photo": self.D_photo}

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.speed.channels_last else torch.contiguous_format

    def judge(self, net, images: torch.Tensor) -> torch.Tensor:
        """A discriminator's verdict on `images`, through DiffAugment when the config asks for it."""
        return net(diff_augment(images, self.config.diffaugment))

    def train_step(self, real_photo: torch.Tensor, real_monet: torch.Tensor) -> dict[str, float]:
        """One update of both generators and both discriminators; returns the named losses.

        Both losses are computed before either optimizer steps (the discriminators judge
        detached fakes, so this is the reference's update), and a step whose losses are not
        finite changes no weight: it is skipped, and with fp16 the loss scale backs off.
        """
        cfg = self.config
        real_photo = real_photo.to(self.device, memory_format=self.memory_format, non_blocking=True)
        real_monet = real_monet.to(self.device, memory_format=self.memory_format, non_blocking=True)

        # Generators: D weights are fixed so their gradients are not computed for nothing.
        set_requires_grad((self.D_monet, self.D_photo), False)
        self.opt_G.zero_grad(set_to_none=True)
        G_photo2monet, G_monet2photo = self.replicas["G_photo2monet"], self.replicas["G_monet2photo"]
        with autocast(self.speed, self.device):
            fake_monet = G_photo2monet(real_photo)
            fake_photo = G_monet2photo(real_monet)
            losses = {  # the Ds' own modules: their frozen weights get no gradient to all-reduce
                "adv_photo2monet": self.gan_loss(self.judge(self.D_monet, fake_monet), True),
                "adv_monet2photo": self.gan_loss(self.judge(self.D_photo, fake_photo), True),
                "cycle_photo": F.l1_loss(G_monet2photo(fake_monet), real_photo) * cfg.cycle_lambda,
                "cycle_monet": F.l1_loss(G_photo2monet(fake_photo), real_monet) * cfg.cycle_lambda,
            }
            if cfg.identity_lambda > 0:  # keeps colours: a painting fed to photo2monet should pass through
                losses["idt_photo2monet"] = F.l1_loss(G_photo2monet(real_monet), real_monet) * cfg.identity_lambda
                losses["idt_monet2photo"] = F.l1_loss(G_monet2photo(real_photo), real_photo) * cfg.identity_lambda
            else:
                losses["idt_photo2monet"] = losses["idt_monet2photo"] = torch.zeros((), device=self.device)
        self.scaler.scale(sum(losses.values())).backward()

        # Discriminators: real vs. a fake from the history pool, halved to slow D relative to G.
        set_requires_grad((self.D_monet, self.D_photo), True)
        self.opt_D.zero_grad(set_to_none=True)
        pooled_monet, pooled_photo = self.pool_monet.query(fake_monet), self.pool_photo.query(fake_photo)
        losses.update(self.discriminator_losses(real_photo, real_monet, pooled_photo, pooled_monet))
        self.scaler.scale(losses["D_monet"] + losses["D_photo"]).backward()

        # The global batch's losses: every process then takes the same skip decision below.
        stacked = mean_over_ranks(torch.stack([losses[n].detach().float() for n in LOSS_NAMES]))
        values = dict(zip(LOSS_NAMES, stacked.tolist()))
        if all(math.isfinite(v) for v in values.values()):  # the step's one device sync, above
            self.scaler.step(self.opt_G)  # with fp16, also skipped if a gradient overflowed
            self.scaler.step(self.opt_D)
            self.scaler.update()
            self.skipped_in_a_row = 0
        else:
            self.skip_step(values)
        return values

    def skip_step(self, values: dict[str, float]) -> None:
        self.skipped_in_a_row += 1
        self.skipped_total += 1
        if self.scaler.is_enabled():
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        if self.skipped_in_a_row >= self.config.max_skipped_steps:
            raise NonFiniteLossError(
                f"losses were not finite for {self.skipped_in_a_row} steps in a row (last: {bad}); no weights "
                f"were updated by those steps and the last checkpoint is intact. Lower lr, or try amp='off' "
                f"(now {self.speed.amp!r}).")

    def discriminator_losses(self, real_photo, real_monet, fake_photo, fake_monet) -> dict[str, torch.Tensor]:
        """Both discriminators' losses on real images and (pooled) fakes."""
        with autocast(self.speed, self.device):
            return {"D_monet": self.discriminator_loss(self.replicas["D_monet"], real_monet, fake_monet),
                    "D_photo": self.discriminator_loss(self.replicas["D_photo"], real_photo, fake_photo)}

    def discriminator_loss(self, net, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.gan_loss(self.judge(net, real), True) + self.gan_loss(self.judge(net, fake.detach()), False))

    def state_dict(self) -> dict:
        """Weights, optimizers, this process's pools, the loss scale."""
        return {
            "networks": {name: net.state_dict() for name, net in self.networks.items()},
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "pools": {"monet": self.pool_monet.state_dict(), "photo": self.pool_photo.state_dict()},
            "scaler": self.scaler.state_dict(), "skipped_total": self.skipped_total,
        }

    def load_state_dict(self, state: dict, path) -> None:
        """What `state_dict` saved (`path` names the checkpoint in errors)."""
        for name, net in self.networks.items():
            load_network(net, state["networks"][name], name, path)
        for optimizer, saved in ((self.opt_G, state["opt_G"]), (self.opt_D, state["opt_D"])):
            load_optimizer(optimizer, saved)
        self.pool_monet.load_state_dict(state["pools"]["monet"], self.device)
        self.pool_photo.load_state_dict(state["pools"]["photo"], self.device)
        if state["scaler"]:  # {} from a run without fp16: a T4 resuming an A100's run starts a fresh scale
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_total = state["skipped_total"]
