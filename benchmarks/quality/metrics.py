"""What the quality benchmark measures besides FID: the dot mosaic of stride-2 upsamplings, and
the photos with Monet's palette and nothing else (how far colour alone goes). uint8 images,
N x 3 x H x W."""
from __future__ import annotations

import torch


def periodic_excess_share(images: torch.Tensor, period: int = 8) -> float:
    """The share of the images' spectral energy (each channel, its mean removed) that stands as
    peaks on the frequencies of a `period`-pixel lattice: where the dots of stride-2 upsamplings
    put it (periods 2, 4 and 8 for the last three; the period-8 lattice holds the others). A peak
    is the power above the level of its neighbours (the higher of the two axes' pairs, so that
    the cross of a natural image's spectrum is no peak). Natural images show almost none; a
    periodic mosaic, its whole energy."""
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square().sum(dim=(0, 1))
    level = torch.maximum(*((power.roll(1, dim) + power.roll(-1, dim)) / 2 for dim in (0, 1)))
    height, width = power.shape[-2:]
    peaks = (power - level).clamp_min(0)[::height // period, ::width // period]
    return float((peaks.sum() - peaks[0, 0]) / (power.sum() - power[0, 0]))


def artifact_shares(translations: torch.Tensor, photos: torch.Tensor) -> dict:
    """The periodic share of the translations beside that of the photos they came from."""
    return {"artifacts": periodic_excess_share(translations), "photo_artifacts": periodic_excess_share(photos)}


def colour_matched(photos: torch.Tensor, paintings: torch.Tensor) -> torch.Tensor:
    """Each photo's channels moved to the paintings' mean and spread (Reinhard et al.'s colour
    transfer, in RGB): Monet's palette on the photo, no brushwork."""
    x = photos.double()
    mean, std = x.mean(dim=(-2, -1), keepdim=True), x.std(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    target = paintings.double().transpose(0, 1).flatten(1)  # channel x every painting pixel
    matched = (x - mean) / std * target.std(dim=1)[:, None, None] + target.mean(dim=1)[:, None, None]
    return matched.round().clamp(0, 255).to(torch.uint8)
