"""One recipe of the quality benchmark: trained and evaluated here (`train_and_evaluate`), or
trained on a machine without the FID network with each evaluation's translations kept
(`record`), then scored here as the evaluations would have been (`score_recorded`). Each writes
out/<run>/evaluations.json, beside what the run is read against: the photos untouched, the photos
in Monet's colours and Monet's own paintings, at the same counts."""
from __future__ import annotations

import json
import os
import random
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import decode_png, encode_png

from monet_utils.acceleration import resolve_device
from monet_utils.checkpoints import load_generator
from monet_utils.config import CycleGANConfig, write_json
from monet_utils.data import build_dataset, decode_all, load_images, to_uint8
from monet_utils.evaluation import Evaluator, evaluating
from monet_utils.fid import fid_scores
from monet_utils.time_budget import SESSION_STARTED_ENV
from monet_utils.training import CycleGANTrainer

from .metrics import artifact_shares, colour_matched
from .report import save_full_size

RECIPES_FILE = Path(__file__).with_name("recipes.json")


def load_recipes() -> tuple[dict, list[str]]:
    """(name: {"why", "config"}, the names run when none are given)."""
    data = json.loads(RECIPES_FILE.read_text())
    return data["recipes"], data["default"]


@dataclass(frozen=True)
class Plan:
    """What every run of one invocation shares: the data, sizes, counts and the schedule."""
    data: Path
    size: int = 256
    photos: int = 2000  # training photos: a fixed subset, so that the LR decays within the time
    holdout: int = 60  # paintings never trained on: the FID reference
    eval_photos: int = 250
    eval_steps: int = 500
    epochs: int = 0  # 0: as many as `minutes` holds, by the trainer's time plan (half of them decaying)
    minutes: float = 60.0  # each run's training time, a limit also with `epochs`
    ngf: int = 64  # both networks' width, unless the recipe sets it
    device: str = "auto"
    device_speed: bool = False  # the device's amp and compile ("auto"); else fp32 and eager, the CPU runs' maths
    photo_order: str = ""  # a JSON list of the training photos' names: a data folder holding only them

    def run_name(self, recipe: str) -> str:
        """The run's name, and so its folder: the recipe, and what else makes its figures differ."""
        length = f"{self.epochs} epochs" if self.epochs else f"{self.minutes:g} min"
        maths = " with the device's speed switches" if self.device_speed else ""
        return f"{recipe}, {self.size}px, {length}{maths} on {device_label(resolve_device(self.device))}"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def recipe_config(name: str, plan: Plan, folder: Path) -> CycleGANConfig:
    recipes, _ = load_recipes()
    model = dict(ngf=plan.ngf, ndf=plan.ngf) | recipes[name]["config"]
    speed = "auto" if plan.device_speed else "off"
    return CycleGANConfig(
        image_size=plan.size, holdout_paintings=plan.holdout, eval_photos=plan.eval_photos, eval_steps=plan.eval_steps,
        epochs=plan.epochs, decay_epochs=plan.epochs // 2, time_budget_hours=plan.minutes / 60, reserve_minutes=0.0,
        num_workers=0, device=plan.device, amp=speed, compile=speed, checkpoint_every=10**9, checkpoint_minutes=0.0,
        tensorboard_every=0, output_dir=str(folder), **model)


def training_photos(photos: list[Path], count: int) -> list[Path]:
    """The first `count` of a fixed shuffle of the sorted listing."""
    photos = list(photos)
    random.Random(0).shuffle(photos)
    return photos[:count]


def benchmark_dataset(config: CycleGANConfig, plan: Plan):
    dataset = build_dataset(config, plan.data)
    if not plan.photo_order:
        dataset.photo_paths = training_photos(dataset.photo_paths, plan.photos)
        return dataset
    order = json.loads(Path(plan.photo_order).read_text())[:plan.photos]
    found = {path.name: path for path in dataset.photo_paths}
    missing = [name for name in order if name not in found]
    if missing:
        raise SystemExit(f"--photo-order {plan.photo_order}: {len(missing)} of its photos are not in "
                         f"{plan.data / 'photo_jpg'} (first: {missing[0]})")
    dataset.photo_paths = [found[name] for name in order]
    return dataset


def start_run(name: str, plan: Plan, folder: Path, trainer_class=CycleGANTrainer):
    """Recipe `name`'s trainer writing into `folder` (emptied: an earlier run's best.pt would
    outrank this one's) and its dataset; the time plan counts from now."""
    shutil.rmtree(folder, ignore_errors=True)
    os.environ[SESSION_STARTED_ENV] = str(time.monotonic())
    config = recipe_config(name, plan, folder)
    return trainer_class(config), benchmark_dataset(config, plan)


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def train_and_evaluate(name: str, plan: Plan, network_file: Path, out: Path) -> Path:
    """Train recipe `name`, the trainer evaluating every `eval_steps` steps and at the end; its
    evaluations, references and artifact shares into out/<run>/evaluations.json (returned)."""
    scratch = out / "scratch" / slug(name)
    trainer, dataset = start_run(name, plan, scratch)
    run = plan.run_name(name)
    evaluator = Evaluator(trainer.config, dataset, trainer.device, network_file)
    print(f"\n{run}: {len(dataset.photo_paths)} photos, {len(dataset.monet_paths)} training paintings, "
          f"{len(dataset.holdout_paths)} held out; evaluating every {plan.eval_steps} steps", flush=True)
    trainer.fit(trainer.train_loader(dataset), progress=False, evaluator=evaluator)
    best_generator, _ = load_generator(trainer.best_path, device="cpu")
    scored = resized_as_evaluated(evaluator.photo_paths, plan.size)
    translations = torch.cat(list(evaluator.translations(best_generator)))
    folder = out / slug(run)
    save_full_size(translations[:8], scored[:8], folder / "translations.png")
    return write_json(folder / "evaluations.json", {
        "name": run, "recipe": name, "device": device_label(trainer.device), "evaluations": trainer.evaluations,
        "steps": trainer.step, "train_seconds": round(trainer.train_seconds, 1), "epochs": trainer.config.epochs,
        **reference_scores(evaluator, scored, translations, plan.size)})


class RecordingTrainer(CycleGANTrainer):
    """A trainer whose evaluations keep the translations they would score, losslessly, in
    `archive` (step_<N>/<i>.png and step_<N>.json), for a machine without the FID network."""
    archive: Path
    run: dict

    def evaluate(self, evaluator, board=None) -> str:
        with evaluating(self.model.G_photo2monet):
            translations = torch.cat(list(evaluator.translations(self.model.G_photo2monet)))
        state = {**self.run, "step": self.step, "epoch": self.epoch, "epochs": self.config.epochs,
                 "train_seconds": round(self.train_seconds, 1)}
        with zipfile.ZipFile(self.archive, "a") as files:  # whole after each evaluation, should the run be cut off
            for i, image in enumerate(translations):
                files.writestr(f"step_{self.step}/{i:04d}.png", encode_png(image, compression_level=9).numpy())
            files.writestr(f"step_{self.step}.json", json.dumps(state))
        return f"{self.run['name']}: step {self.step:,} recorded, {self.train_seconds / self.step:.4f} s/step"


def record(name: str, plan: Plan, out: Path, scratch: Path) -> Path:
    """Train recipe `name` as `train_and_evaluate` does, each evaluation's translations kept in
    out/<run>.zip (returned) instead of scored."""
    trainer, dataset = start_run(name, plan, scratch / slug(name), RecordingTrainer)
    evaluator = Evaluator(trainer.config, dataset, trainer.device, network_file=None)  # it chooses the photos
    device = device_label(trainer.device)
    trainer.run = {"name": plan.run_name(name), "recipe": name, "device": device,
                   "photos": [path.name for path in evaluator.photo_paths]}
    trainer.archive = out / f"{slug(trainer.run['name'])}.zip"
    out.mkdir(parents=True, exist_ok=True)
    trainer.archive.unlink(missing_ok=True)
    print(f"{trainer.run['name']}: {len(dataset.photo_paths)} photos, evaluating every {plan.eval_steps} steps, "
          f"into {trainer.archive}", flush=True)
    trainer.fit(trainer.train_loader(dataset), progress=False, evaluator=evaluator)
    return trainer.archive


def score_recorded(archive_path: Path, plan: Plan, network_file: Path, out: Path) -> Path:
    """Score what `record` kept in `archive_path` as the evaluations would have, into
    out/<run>/evaluations.json (returned), beside the references of the same photos."""
    with zipfile.ZipFile(archive_path) as archive:
        states = sorted((json.loads(archive.read(member)) for member in archive.namelist()
                         if member.endswith(".json")), key=lambda state: state["step"])
        if not states:
            raise SystemExit(f"{archive_path}: no evaluations recorded")
        run = states[-1]
        config = recipe_config(run["recipe"], plan, out / "scratch" / slug(run["recipe"]))
        evaluator = Evaluator(config, benchmark_dataset(config, plan), torch.device("cpu"), network_file)
        if [path.name for path in evaluator.photo_paths] != run["photos"]:
            raise SystemExit(f"{archive_path}: its translations are of other photos than this benchmark's "
                             f"(--photos {plan.photos}, --eval-photos {plan.eval_photos}?)")
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
    scored = resized_as_evaluated(evaluator.photo_paths, plan.size)
    folder = out / slug(run["name"])
    save_full_size(best[1][:8], scored[:8], folder / "translations.png")
    return write_json(folder / "evaluations.json", {
        "name": run["name"], "recipe": run["recipe"], "device": run["device"], "evaluations": evaluations,
        "steps": run["step"], "train_seconds": run["train_seconds"], "epochs": run["epochs"],
        **reference_scores(evaluator, scored, best[1], plan.size)})


def resized_as_evaluated(paths, size: int) -> torch.Tensor:
    """The images at `paths` resized as the evaluation resizes the photos it translates, uint8."""
    return torch.cat([to_uint8(load_images(paths[i:i + 50], size)) for i in range(0, len(paths), 50)])


def reference_scores(evaluator: Evaluator, scored: torch.Tensor, translations: torch.Tensor, size: int) -> dict:
    """What a run's evaluations are read against, on the evaluator's photos (`scored`, uint8): the
    photos untouched, the photos in the training paintings' colours, as many of Monet's training
    paintings; and the artifact shares of `translations` (the best evaluation's) beside the photos'."""
    baseline = fid_scores(evaluator.reference, evaluator.features(scored.split(50), "photos"),
                          memorized_features=evaluator.memorized)
    recoloured = colour_matched(scored, decode_all(evaluator.training_paths or evaluator.reference_paths, size))
    colour = fid_scores(evaluator.reference, evaluator.features(recoloured.split(50), "recoloured photos"))
    # As many of Monet's training paintings as photos are scored (FID grows as the count shrinks).
    paintings = (fid_scores(evaluator.reference, evaluator.memorized[:len(scored)])
                 if evaluator.memorized is not None else None)
    return {"baseline": baseline, "paintings": paintings, "colour": colour, "reference": evaluator.describe_reference,
            **artifact_shares(translations, scored)}
