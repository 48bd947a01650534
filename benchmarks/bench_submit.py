"""Minutes of the submit notebook's path (notebooks/monet_submit.ipynb), stage by stage: find the
generator among the inputs, load it, list the readable photos, write images.zip, check it.

    .venv/bin/python benchmarks/bench_submit.py --data-dir data/gan-getting-started          # all 7,038 photos
    .venv/bin/python benchmarks/bench_submit.py --data-dir data/gan-getting-started --photos 200

The generator is the Kaggle notebook's default architecture (U-Net, resize-convs, ngf 64, 256x256)
with untrained weights: the speed is the architecture's, whatever it learnt.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from monet_utils.config import CycleGANConfig
from monet_utils.data import find_data_dir, readable_images
from monet_utils.kaggle_notebook import KAGGLE_DEFAULTS
from monet_utils.submission import (check_submission_zip, find_generator, load_submission_generator,
                                    write_submission_zip)
from monet_utils.training import CycleGANTrainer

KAGGLE_ARCHITECTURE = {name: KAGGLE_DEFAULTS[name][0].strip('"') for name in ("generator", "upsampling")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="the competition data (default: searched as the notebook does)")
    parser.add_argument("--photos", type=int, default=0, help="this many photos (default 0: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16, help="the submit notebook's default")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        inputs, working = Path(scratch) / "input", Path(scratch) / "working"
        run = inputs / "notebooks" / "painter" / "monet-training"  # a training notebook's output, attached
        trainer = CycleGANTrainer(CycleGANConfig(**KAGGLE_ARCHITECTURE, device="cpu", output_dir=str(run)))
        trainer.save_best({"step": 0, "epoch": 0, "fid": 0.0, "mifid": 0.0, "seconds": 0.0})
        del trainer

        stages, started = {}, time.perf_counter()

        def stage(name):
            nonlocal started
            now = time.perf_counter()
            stages[name], started = now - started, now

        chosen = find_generator("", inputs)
        stage("find the generator")
        model, image_size = load_submission_generator(chosen, args.device)
        stage("load it")
        photos = readable_images(find_data_dir(args.data_dir, inputs) / "photo_jpg")
        photos = photos[:args.photos] if args.photos else photos
        stage("list the readable photos")
        zip_path = write_submission_zip(model, photos, working / "images.zip", image_size, batch_size=args.batch_size)
        stage("write images.zip")
        report = check_submission_zip(zip_path, competition=False)
        stage("check it")

    device = next(model.parameters()).device
    threads = torch.get_num_threads() if device.type == "cpu" else None
    print(f"\n{len(photos):,} photos at {image_size}x{image_size}, {KAGGLE_ARCHITECTURE}, on {device}"
          + (f" ({threads} threads)" if threads else "") + f": {report}")
    print(f"| stage | seconds |\n| --- | ---: |")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:,.1f} |")
    total = sum(stages.values())
    print(f"| **all** | **{total:,.1f}** ({total / 60:.1f} min; {len(photos) / stages['write images.zip']:.2f} photos/s "
          f"while writing) |")


if __name__ == "__main__":
    main()
