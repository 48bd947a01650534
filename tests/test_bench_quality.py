"""The quality benchmark's periodic-artifact measure: it must see the dot mosaic of a stride-2
upsampling and not mistake natural images for one."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"
spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
bench_quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_quality)


def smooth_images(n=6, size=64, seed=0):
    """Photo-like: random colour fields, smooth at the pixel scale, as uint8."""
    coarse = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 200 + 20)


@pytest.mark.parametrize("period", [2, 4, 8])
def test_a_mosaic_of_dots_at_the_upsampling_periods_raises_the_share_and_smooth_images_keep_it_small(period):
    photos = smooth_images()
    dots = torch.zeros(64, 64)
    dots[1::period, 2 % period::period] = 30.0  # one bright dot every `period` pixels, off the origin
    checkerboard = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 20.0

    clean = bench_quality.periodic_excess_share(photos.round().to(torch.uint8))
    dotted = bench_quality.periodic_excess_share((photos + dots).clamp(0, 255).round().to(torch.uint8))
    checkered = bench_quality.periodic_excess_share((photos + checkerboard).clamp(0, 255).round().to(torch.uint8))

    assert clean < 0.001
    assert dotted > 100 * clean
    assert checkered > 100 * clean


def test_the_share_is_of_peaks_on_the_lattice_only():
    # Stripes of period 8 put all their energy on the lattice; stripes of period 16 are off it;
    # a smooth ramp has energy near the lattice's axes but no peak there.
    x = torch.arange(64, dtype=torch.float64)
    stripes = lambda period: (torch.cos(2 * torch.pi * x / period)[None, :] * 50 + 128).expand(64, 64)  # noqa: E731
    as_batch = lambda image: image.expand(1, 3, 64, 64)  # noqa: E731
    assert bench_quality.periodic_excess_share(as_batch(stripes(8))) > 0.99
    assert bench_quality.periodic_excess_share(as_batch(stripes(16))) < 1e-6
    ramp = (x[None, :] * 2 + x[:, None]).expand(64, 64)
    assert bench_quality.periodic_excess_share(as_batch(ramp)) < 1e-3


def test_colour_matching_gives_each_photo_the_paintings_palette_and_keeps_its_picture():
    photos = smooth_images(n=4, seed=1).round().to(torch.uint8)
    palette = torch.tensor([60.0, 40.0, 10.0])[:, None, None]
    paintings = (smooth_images(n=3, seed=2) * 0.5 + palette).round().to(torch.uint8)
    matched = bench_quality.colour_matched(photos, paintings).double()

    target = paintings.double().transpose(0, 1).flatten(1)
    for image, photo in zip(matched, photos.double()):
        assert torch.allclose(image.mean(dim=(1, 2)), target.mean(dim=1), atol=1.0)
        assert torch.allclose(image.std(dim=(1, 2)), target.std(dim=1), rtol=0.05)
        for channel, original in zip(image, photo):  # the same picture: each channel an affine map of the photo's
            assert torch.corrcoef(torch.stack([channel.flatten(), original.flatten()]))[0, 1] > 0.99


def test_every_recipe_can_be_named_in_recipes():
    # --recipes is comma-separated: a comma in a name would make the recipe unreachable.
    names = [*bench_quality.RECIPES, *bench_quality.LONG_RECIPES]
    assert not [name for name in names if "," in name]
    assert set(bench_quality.LONG_DEFAULT) <= set(bench_quality.LONG_RECIPES)
