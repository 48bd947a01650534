"""CUT and FastCUT (Park et al. 2020, arXiv:2007.15651) as the reference code trains them
(taesungp/contrastive-unpaired-translation: models/cut_model.py, patchnce.py, networks.py). One
generator and one discriminator; in place of CycleGAN's second generator and cycle loss, PatchNCE:
a patch of the translation, seen through the generator's own encoder, must be more like the photo's
patch at the same place than like the photo's other patches (a contrastive loss over features of
the encoder layers `NCE_LAYERS`, each sampled patch through a small MLP of its layer).

CUT adds the same loss on a painting fed to the generator (identity NCE, like CycleGAN's identity
loss); FastCUT drops it, weighs PatchNCE 10x and asks the translation of a flipped input to be the
flipped translation (flip equivariance). Update order follows the reference: the discriminator
first, then the generator and the MLPs. There is no image pool.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .acceleration import SpeedSettings, autocast
from .config import CycleGANConfig
from .gan_model import GANModel, all_finite, process_seed, set_requires_grad
from .models import build_discriminator, build_generator

# The reference's defaults: --nce_layers 0,4,8,12,16 (the padded image, the two downsampling convs, the
# first and fifth residual blocks), --num_patches 256, --nce_T 0.07, --netF mlp_sample with --netF_nc 256.
NCE_LAYERS = (0, 4, 8, 12, 16)
NCE_PATCHES = 256
NCE_TEMPERATURE = 0.07
MLP_WIDTH = 256


@dataclass(frozen=True)
class Recipe:
    """The reference's --CUT_mode defaults (lambda_GAN is 1 in both)."""
    nce_lambda: float
    identity_nce: bool  # --nce_idt: PatchNCE between a painting and its translation too
    flip_equivariance: bool


LOSS_NAMES = ("G_GAN", "NCE", "NCE_Y", "D_real", "D_fake", "D")  # NCE_Y: CUT's identity term, not FastCUT's
RECIPES = {"cut": Recipe(nce_lambda=1.0, identity_nce=True, flip_equivariance=False),
           "fastcut": Recipe(nce_lambda=10.0, identity_nce=False, flip_equivariance=True)}


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, images: int,
                   temperature: float = NCE_TEMPERATURE) -> torch.Tensor:
    """Per sampled patch, the cross-entropy of picking its positive among its negatives (the
    reference's PatchNCELoss). `query` (the translation's patches) and `key` (the source's, no
    gradient) are (images * patches, C), L2-normalised, the patches of each image together and at
    the same positions in both. Positive: the key at the query's position; negatives: the keys of
    the image's other positions (the same position's similarity is masked to -10 before the
    temperature, as the reference does)."""
    key = key.detach()
    positives = (query * key).sum(1, keepdim=True)
    query, key = query.unflatten(0, (images, -1)), key.unflatten(0, (images, -1))
    similarities = query @ key.transpose(1, 2)  # (images, patches, patches)
    same_position = torch.eye(similarities.shape[-1], dtype=torch.bool, device=similarities.device)
    negatives = similarities.masked_fill(same_position, -10.0).flatten(0, 1)
    logits = torch.cat([positives, negatives], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction="none")


class PatchSampler(nn.Module):
    """The reference's PatchSampleF ('mlp_sample'): at each layer the same random positions in
    every image of the batch (at most `patches` of them), each position's feature vector through
    that layer's two-layer MLP, then L2-normalised. The reference builds the MLPs on the first
    batch; their sizes follow from the generator, so here they are built with it (`channels`)."""

    def __init__(self, channels: list[int], width: int = MLP_WIDTH):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, width), nn.ReLU(), nn.Linear(width, width))
                                  for c in channels)

    def forward(self, features: list[torch.Tensor], patches: int = NCE_PATCHES,
                positions: list[torch.Tensor] | None = None, generator: torch.Generator | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(samples, positions): samples (batch * patches, width) per layer; `positions` given
        (the source's) samples the same places, else random ones are drawn (from `generator`, a
        CPU one, when given)."""
        samples, chosen = [], []
        for index, (feature, mlp) in enumerate(zip(features, self.mlps)):
            flat = feature.permute(0, 2, 3, 1).flatten(1, 2)  # (batch, H*W, C)
            where = positions[index] if positions is not None else (
                torch.randperm(flat.shape[1], generator=generator)[:patches].to(flat.device, non_blocking=True))
            sample = mlp(flat[:, where].flatten(0, 1))
            samples.append(sample / (sample.norm(dim=1, keepdim=True) + 1e-7))
            chosen.append(where)
        return samples, chosen


def feature_channels(generator: nn.Module, layers: tuple[int, ...] = NCE_LAYERS) -> list[int]:
    """The channels of the generator's outputs at `layers` (one small image through it, on the CPU)."""
    with torch.no_grad():
        return [feature.shape[1] for feature in generator.features(torch.zeros(1, 3, 32, 32), layers)]


class CUT(GANModel):
    """The generator, the discriminator and the patch sampler, and their update. The same interface
    as `cyclegan.CycleGAN` for the loop: `train_step`, `state_dict`/`load_state_dict`, `networks`,
    `opt_G`/`opt_D`."""

    progress_losses = ("NCE", "D")

    def __init__(self, config: CycleGANConfig, device: torch.device, speed: SpeedSettings, rank: int = 0):
        super().__init__(config, device, speed)
        self.recipe = RECIPES[config.model]
        self.loss_names = tuple(name for name in LOSS_NAMES if name != "NCE_Y" or self.recipe.identity_nce)
        torch.manual_seed(config.seed)
        generator = build_generator(config, norm=speed.norm)
        channels = feature_channels(generator)  # before it moves to the device
        self.G_photo2monet = self.placed(generator)
        self.D_monet = self.placed(build_discriminator(config, norm=speed.norm))
        self.F_patches = self.placed(PatchSampler(channels))
        if rank:  # then streams of their own: DiffAugment must not draw the same for both halves of a batch
            torch.manual_seed(process_seed(config.seed, rank))
        # Patch positions and FastCUT's flips, drawn for the global batch: every process draws the same,
        # so data-parallel training takes one process's step.
        self.draws = torch.Generator().manual_seed(config.seed)
        self.replicas = dict(self.networks)
        # The reference's F has an Adam of its own, with the same settings and LR schedule as G's; Adam
        # works parameter by parameter, so a parameter group of opt_G makes the same updates.
        self.opt_G = self.adam([{"params": self.G_photo2monet.parameters()}, {"params": self.F_patches.parameters()}])
        self.opt_D = self.adam(self.D_monet.parameters())

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        return {"G_photo2monet": self.G_photo2monet, "D_monet": self.D_monet, "F_patches": self.F_patches}

    def nce_loss(self, source: torch.Tensor, translation: torch.Tensor, flipped: bool) -> torch.Tensor:
        """PatchNCE between `source` and its `translation` (made from the flipped source when
        `flipped`: its features are flipped back), the mean over patches and layers, weighted."""
        # The generator's own module: its features are not its forward, which DDP wraps; their gradients
        # reach the same parameters in the same backward, which DDP's hooks all-reduce once.
        encoder, sampler = self.G_photo2monet, self.replicas["F_patches"]
        queries = encoder.features(translation, NCE_LAYERS)
        if flipped:
            queries = [feature.flip(3) for feature in queries]
        keys, positions = sampler(encoder.features(source, NCE_LAYERS), NCE_PATCHES, generator=self.draws)
        queries, _ = sampler(queries, NCE_PATCHES, positions)
        losses = [patch_nce_loss(q, k, len(source)).mean() for q, k in zip(queries, keys)]
        return sum(losses) / len(losses) * self.recipe.nce_lambda

    def train_step(self, real_photo: torch.Tensor, real_monet: torch.Tensor) -> dict[str, float]:
        """One update of the discriminator, then of the generator and the MLPs; returns the named
        losses. Each update happens only if its losses are finite on every process; a step with
        any that is not is skipped (counted; with fp16 the loss scale backs off), though when only
        the generator's are, the discriminator has already made its update, as in the reference."""
        recipe = self.recipe
        real_photo, real_monet = self.on_device(real_photo), self.on_device(real_monet)
        G, D = self.replicas["G_photo2monet"], self.replicas["D_monet"]
        real = torch.cat([real_photo, real_monet]) if recipe.identity_nce else real_photo
        # The reference draws the flip once per step, for the whole batch.
        flipped = recipe.flip_equivariance and bool(torch.rand((), generator=self.draws) < 0.5)
        with autocast(self.speed, self.device):
            fake = G(real.flip(3) if flipped else real)
        fake_monet, idt_monet = fake[:len(real_photo)], fake[len(real_photo):]

        set_requires_grad([self.D_monet], True)
        self.opt_D.zero_grad(set_to_none=True)
        with autocast(self.speed, self.device):
            losses = {"D_fake": self.gan_loss(self.judge(D, fake_monet.detach()), False),
                      "D_real": self.gan_loss(self.judge(D, real_monet), True)}
            losses["D"] = 0.5 * (losses["D_fake"] + losses["D_real"])
        self.scaler.scale(losses["D"]).backward()
        values = self.global_losses(losses, ("D_real", "D_fake", "D"))
        if not all_finite(values):
            return self.skipped(values)
        self.scaler.step(self.opt_D)

        # Generator and MLPs, against the updated discriminator (its own module: frozen, nothing to all-reduce).
        set_requires_grad([self.D_monet], False)
        self.opt_G.zero_grad(set_to_none=True)
        with autocast(self.speed, self.device):
            losses["G_GAN"] = self.gan_loss(self.judge(self.D_monet, fake_monet), True)  # lambda_GAN 1
            losses["NCE"] = self.nce_loss(real_photo, fake_monet, flipped)
            nce = losses["NCE"]
            if recipe.identity_nce:  # a painting's translation should keep its patches too
                losses["NCE_Y"] = self.nce_loss(real_monet, idt_monet, flipped)
                nce = 0.5 * (losses["NCE"] + losses["NCE_Y"])
        self.scaler.scale(losses["G_GAN"] + nce).backward()
        set_requires_grad([self.D_monet], True)
        values.update(self.global_losses(losses, [name for name in self.loss_names if name not in values]))
        if not all_finite(values):
            return self.skipped(values)
        self.scaler.step(self.opt_G)
        self.scaler.update()
        self.skipped_in_a_row = 0
        return {name: values[name] for name in self.loss_names}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "draws": self.draws.get_state()}

    def load_state_dict(self, state: dict, path) -> None:
        super().load_state_dict(state, path)
        self.draws.set_state(state["draws"])

    def skipped(self, values: dict[str, float]) -> dict[str, float]:
        """Skip the step (`values`: the losses computed, some not finite); the losses not computed are NaN."""
        self.skip_step(values)
        return {name: values.get(name, math.nan) for name in self.loss_names}
