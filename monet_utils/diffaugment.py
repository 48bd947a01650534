"""DiffAugment (Zhao et al. 2020, arXiv:2006.10738): random colour, translation and cutout
applied to every image a discriminator sees, real and fake alike, and differentiable, so the
generators learn through it. With 300 paintings a discriminator otherwise memorises them.

The three transforms of the authors' `DiffAugment_pytorch.py`, with their strengths, drawn
per image from the global torch RNG (saved in checkpoints, so resumed runs draw the same).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def diff_augment(images: torch.Tensor, policy: str) -> torch.Tensor:
    """`images` (N, C, H, W) in [-1, 1] through each transform of the comma-separated `policy`."""
    for name in filter(None, policy.split(",")):
        for transform in TRANSFORMS[name]:
            images = transform(images)
    return images


def per_image(images: torch.Tensor) -> torch.Tensor:
    """One uniform [0, 1) draw per image, shaped to broadcast over it."""
    return torch.rand(images.shape[0], 1, 1, 1, dtype=images.dtype, device=images.device)


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images + (per_image(images) - 0.5)


def saturation(images: torch.Tensor) -> torch.Tensor:
    grey = images.mean(dim=1, keepdim=True)
    return (images - grey) * (per_image(images) * 2) + grey


def contrast(images: torch.Tensor) -> torch.Tensor:
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (per_image(images) + 0.5) + mean


def translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size, filling with zeros (mid-grey)."""
    n, _, h, w = images.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=images.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=images.device)
    batch, rows, cols = _grid(n, h, w, images.device)
    rows = (rows + dy + 1).clamp(0, h + 1)  # +1: index into the zero-padded image
    cols = (cols + dx + 1).clamp(0, w + 1)
    padded = F.pad(images, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` of the size per image, centred anywhere (clipped at the edges)."""
    n, _, h, w = images.shape
    cut_h, cut_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - cut_h % 2), (n, 1, 1), device=images.device)
    left = torch.randint(0, w + (1 - cut_w % 2), (n, 1, 1), device=images.device)
    batch, rows, cols = _grid(n, cut_h, cut_w, images.device)
    rows = (rows + top - cut_h // 2).clamp(0, h - 1)
    cols = (cols + left - cut_w // 2).clamp(0, w - 1)
    mask = torch.ones(n, h, w, dtype=images.dtype, device=images.device)
    mask[batch, rows, cols] = 0
    return images * mask.unsqueeze(1)


def _grid(n: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ranges = (torch.arange(size, device=device) for size in (n, h, w))
    return torch.meshgrid(*ranges, indexing="ij")


TRANSFORMS = {"color": (brightness, saturation, contrast), "translation": (translation,), "cutout": (cutout,)}
