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

import torch
from torch.nn import functional as F

from .acceleration import SpeedSettings, autocast
from .config import CycleGANConfig
from .gan_model import GANModel, all_finite, process_seed, set_requires_grad
from .image_pool import ImagePool
from .models import build_discriminator, build_generator

LOSS_NAMES = (
    "adv_photo2monet", "adv_monet2photo",  # generators fooling D_monet / D_photo
    "cycle_photo", "cycle_monet",  # photo -> monet -> photo, monet -> photo -> monet
    "idt_photo2monet", "idt_monet2photo",  # each generator fed its own output domain
    "D_monet", "D_photo",
)


class CycleGAN(GANModel):
    """The four networks and their update. `train_step` is the whole interface a loop needs, with
    `state_dict`/`load_state_dict` for what a checkpoint keeps of it."""

    loss_names = LOSS_NAMES
    progress_losses = ("cycle_photo", "D_monet")  # shown beside the progress bar

    def __init__(self, config: CycleGANConfig, device: torch.device, speed: SpeedSettings, rank: int = 0):
        """`rank` is this process's in a distributed run: its pools and random streams are its own."""
        super().__init__(config, device, speed)
        torch.manual_seed(config.seed)  # the same initial weights in every process (DDP broadcasts rank 0's anyway)
        self.G_photo2monet, self.G_monet2photo = (self.placed(build_generator(config, norm=speed.norm)) for _ in "ab")
        self.D_monet, self.D_photo = (self.placed(build_discriminator(config, norm=speed.norm)) for _ in "ab")
        if rank:  # then streams of their own: DiffAugment must not draw the same for both halves of a batch
            torch.manual_seed(process_seed(config.seed, rank))
        self.replicas = dict(self.networks)
        self.opt_G = self.adam(itertools.chain(self.G_photo2monet.parameters(), self.G_monet2photo.parameters()))
        self.opt_D = self.adam(itertools.chain(self.D_monet.parameters(), self.D_photo.parameters()))
        pool_seed = config.seed + 1000 * rank  # each process keeps its own pools
        self.pool_monet = ImagePool(config.pool_size, seed=pool_seed)  # fake paintings for D_monet
        self.pool_photo = ImagePool(config.pool_size, seed=pool_seed + 1)

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        return {"G_photo2monet": self.G_photo2monet, "G_monet2photo": self.G_monet2photo,
                "D_monet": self.D_monet, "D_photo": self.D_photo}

    def train_step(self, real_photo: torch.Tensor, real_monet: torch.Tensor) -> dict[str, float]:
        """One update of both generators and both discriminators; returns the named losses.

        Both losses are computed before either optimizer steps (the discriminators judge
        detached fakes, so this is the reference's update), and a step whose losses are not
        finite changes no weight: it is skipped, and with fp16 the loss scale backs off.
        """
        cfg = self.config
        real_photo, real_monet = self.on_device(real_photo), self.on_device(real_monet)

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

        values = self.global_losses(losses, LOSS_NAMES)  # the step's one device sync
        if all_finite(values):
            self.scaler.step(self.opt_G)  # with fp16, also skipped if a gradient overflowed
            self.scaler.step(self.opt_D)
            self.scaler.update()
            self.skipped_in_a_row = 0
        else:
            self.skip_step(values)
        return values

    def discriminator_losses(self, real_photo, real_monet, fake_photo, fake_monet) -> dict[str, torch.Tensor]:
        """Both discriminators' losses on real images and (pooled) fakes."""
        with autocast(self.speed, self.device):
            return {"D_monet": self.discriminator_loss(self.replicas["D_monet"], real_monet, fake_monet),
                    "D_photo": self.discriminator_loss(self.replicas["D_photo"], real_photo, fake_photo)}

    def pools_state(self) -> dict:
        return {"monet": self.pool_monet.state_dict(), "photo": self.pool_photo.state_dict()}

    def load_pools(self, state: dict) -> None:
        self.pool_monet.load_state_dict(state["monet"], self.device)
        self.pool_photo.load_state_dict(state["photo"], self.device)
