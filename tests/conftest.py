"""Tiny configs and generated image folders: no test needs the Kaggle data or a GPU."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monet_utils.config import CycleGANConfig

KAGGLE_DATA = Path(__file__).resolve().parents[2] / "shared" / "kaggle-data" / "gan-getting-started"


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is present."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_gpu)


def write_images(folder: Path, count: int, size=(40, 40), mode="RGB", suffix=".jpg", seed=0, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    paths = []
    for i in range(count):
        shape = (size[1], size[0]) + ((channels,) if channels else ())
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        path = folder / f"{prefix}_{i:03d}{suffix}"
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    """Kaggle layout with 6 photos and 3 paintings of 40x40."""
    root = tmp_path / "data"
    write_images(root / "photo_jpg", 6, seed=1, prefix="photo")
    write_images(root / "monet_jpg", 3, seed=2, prefix="monet")
    return root


@pytest.fixture
def tiny_config(tmp_path) -> CycleGANConfig:
    return CycleGANConfig(image_size=32, ngf=4, ndf=4, n_res_blocks=1, batch_size=2, num_workers=0,
                          pool_size=3, device="cpu", amp="off", output_dir=str(tmp_path / "out"))


@pytest.fixture
def feature_network(tmp_path) -> Path:
    """A TorchScript stand-in for the FID Inception file: images -> 2 features (a 2-D FID is
    well defined from 3 images a side), loaded by the same code as the real file."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 2, kernel_size=16, stride=16)
    net.weight.data *= 100  # features of Inception's scale: scores that print as more than 0.0
    path = tmp_path / "features.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    return path
