"""Images/s of the images.zip export: decode, generator, JPEG encode, zip.

    .venv/bin/python benchmarks/bench_export.py --images 64 --size 256            # full model
    .venv/bin/python benchmarks/bench_export.py --images 512 --size 64 --ngf 32 --blocks 6

Prints one row per worker count (threads for decoding and JPEG encoding), plus the generator
alone on the same batches, which bounds what any I/O tuning can reach.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from monet_utils.data import load_images
from monet_utils.models import ResnetGenerator, init_weights
from monet_utils.submission import check_submission_zip, write_submission_zip
from monet_utils.acceleration import resolve_device


def make_photos(folder: Path, count: int) -> list[Path]:
    """256x256 JPEGs of smooth random colour fields (JPEG-sized like real photos, unlike noise)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        grid = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        paths.append(folder / f"photo_{i:05d}.jpg")
        grid.resize((256, 256), Image.Resampling.BICUBIC).save(paths[-1], quality=95)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="generator input size (output is always 256)")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", default="1,4", help="comma-separated thread counts to compare")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    generator = init_weights(ResnetGenerator(args.ngf, args.blocks)).to(device).eval()
    print(f"device {device}, torch threads {torch.get_num_threads()}, generator ngf={args.ngf} blocks={args.blocks}, "
          f"input {args.size}x{args.size}, batch {args.batch}, {args.images} images")
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp), args.images)
        rows = []
        with torch.inference_mode():  # generator alone, inputs already decoded
            batches = [load_images(photos[i:i + args.batch], args.size).to(device)
                       for i in range(0, len(photos), args.batch)]
            generator(batches[0])  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for batch in batches:
                generator(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            rows.append(("generator only", time.perf_counter() - start))
        for workers in (int(w) for w in args.workers.split(",")):
            zip_path = Path(tmp) / f"images_{workers}.zip"
            start = time.perf_counter()
            write_submission_zip(generator, photos, zip_path, args.size, batch_size=args.batch, workers=workers,
                                 progress=False)
            rows.append((f"export, {workers} worker thread(s)", time.perf_counter() - start))
            assert check_submission_zip(zip_path, competition=False).n_images == args.images
    print(f"\n| {'what':<30} | seconds | images/s |\n|{'-' * 32}|---------|----------|")
    for name, seconds in rows:
        print(f"| {name:<30} | {seconds:7.2f} | {args.images / seconds:8.1f} |")


if __name__ == "__main__":
    main()
