"""Adversarial loss; cycle and identity losses are plain L1 (`torch.nn.functional.l1_loss`)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GANLoss(nn.Module):
    """Loss of a discriminator's patch map against an all-real or all-fake target.

    "lsgan" (the paper's choice, more stable than the log loss) is the mean squared
    error to 1 or 0; "bce" is the original GAN's log loss on logits.
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in ("lsgan", "bce"):
            raise ValueError(f"GANLoss mode must be 'lsgan' or 'bce', got {mode!r}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)
