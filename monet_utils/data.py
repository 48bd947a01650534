"""Find the Kaggle data, read it robustly, augment with albumentations, and batch unpaired samples."""
from __future__ import annotations

import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import ExifTags, Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from . import kaggle_inputs
from .config import CycleGANConfig

PHOTO_DIR, MONET_DIR = "photo_jpg", "monet_jpg"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
COMPETITION = "gan-getting-started"
LOCAL_DATA = Path("data") / COMPETITION
# Written by `make_demo_dataset`; tells the submission step this is not competition data.
DEMO_MARKER = "DEMO_DATA.txt"
# uint8 -> [-1, 1], divided once here on the CPU: CUDA divides by a scalar through its reciprocal,
# 1 ulp off the CPU's quotient, so the in-memory path looks its pixels up to give both the same.
PIXEL_VALUES = torch.arange(256, dtype=torch.float32) / 127.5 - 1


class DataError(FileNotFoundError):
    """The dataset is missing, empty, or laid out differently from Kaggle's."""


def find_data_dir(data_dir: str | os.PathLike | None = None, inputs: str | os.PathLike | None = None) -> Path:
    """`data_dir`, else $DATA_DIR, each used as given (an error when wrong); else a folder among
    Kaggle's inputs (`inputs`, default /kaggle/input) that holds non-empty `photo_jpg/` and
    `monet_jpg/` folders, wherever Kaggle mounted it (the competition's own first); else
    data/gan-getting-started."""
    explicit = [(name, Path(value)) for name, value in (("data_dir", data_dir), ("$DATA_DIR", os.environ.get("DATA_DIR")))
                if value]
    if explicit:
        name, candidate = explicit[0]
        problem = _describe(candidate)
        if problem:
            raise DataError(f"{name} {candidate.resolve()}: {problem}. Expected a folder with non-empty "
                            f"'{PHOTO_DIR}/' and '{MONET_DIR}/' subfolders of images (Kaggle's gan-getting-started layout).")
        return candidate
    root = Path(inputs or kaggle_inputs.input_root())
    attached = kaggle_inputs.find_folders(lambda folder: not _describe(folder), root)
    if attached:
        return sorted(attached, key=lambda folder: COMPETITION not in folder.parts)[0]
    if not _describe(LOCAL_DATA):
        return LOCAL_DATA
    in_inputs = (f"no folder with both, {kaggle_inputs.SEARCH_DEPTH} folders down" if root.is_dir() else
                 "does not exist")
    searched = f"  {root} (Kaggle's inputs): {in_inputs}\n  {LOCAL_DATA.resolve()}: {_describe(LOCAL_DATA)}"
    raise DataError(
        f"no dataset found. Searched:\n{searched}\n"
        f"Expected a folder with non-empty '{PHOTO_DIR}/' and '{MONET_DIR}/' subfolders of images "
        "(Kaggle's gan-getting-started layout). On Kaggle, Add Input the competition's data; elsewhere pass "
        "data_dir, set DATA_DIR, or run `python -m monet_utils demo-data` to make a synthetic one."
    )


def _describe(candidate: Path) -> str:
    """What is wrong with `candidate` as a dataset folder; empty when nothing is."""
    if not candidate.exists():
        return "does not exist"
    if not candidate.is_dir():
        return "is a file, not a folder"
    problems = []
    for sub in (PHOTO_DIR, MONET_DIR):
        if not (candidate / sub).is_dir():
            problems.append(f"no {sub}/")
        elif not list_images(candidate / sub):
            problems.append(f"{sub}/ holds no images")
    return ", ".join(problems)


def is_demo_data(data_dir: str | os.PathLike) -> bool:
    return (Path(data_dir) / DEMO_MARKER).exists()


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_rgb(source) -> Image.Image:
    """The one way an image file (a path or an open file) is read, for training, scoring and
    stylizing alike: turned upright by its EXIF orientation (phone photos), 16-bit grayscale
    scaled to 8 bits (PIL's convert clips it to white), any other mode converted to RGB."""
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode.startswith("I"):  # "I;16*" and "I": 16-bit PNG/TIFF grayscale, 0..65535
            levels = np.asarray(image).astype(np.float32) / 257
            image = Image.fromarray(levels.clip(0, 255).round().astype(np.uint8), "L")
        return image.convert("RGB")


def oriented_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image as `read_rgb` returns it, from the header alone."""
    with Image.open(path) as image:
        width, height = image.size
        turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)  # 90 or 270 degrees
    return (height, width) if turned else (width, height)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 of `read_rgb`."""
    return np.asarray(read_rgb(path))


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully, so truncated files fail here and not mid-training
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def readable_images(folder: str | os.PathLike) -> list[Path]:
    """Images in `folder` that decode; the others are dropped with one warning naming them."""
    paths = list_images(folder)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        ok = list(pool.map(_readable, paths))
    bad = [p.name for p, good in zip(paths, ok) if not good]
    if bad:
        shown = ", ".join(bad[:20]) + (f", ... ({len(bad) - 20} more)" if len(bad) > 20 else "")
        warnings.warn(f"skipping {len(bad)} unreadable image(s) of {len(paths)} in {folder}: {shown}", stacklevel=2)
    good_paths = [p for p, good in zip(paths, ok) if good]
    if not good_paths:
        raise DataError(f"{folder}: no readable images (found {len(paths)} file(s) with image suffixes)")
    return good_paths


def load_size_for(image_size: int) -> int:
    """The reference's jitter resizes to 286/256 of the training size before cropping back."""
    return round(image_size * 286 / 256)


def train_transform(image_size: int) -> A.Compose:
    """The reference's jitter: bicubic resize to 286/256 of the size, random crop back, random flip."""
    load_size = load_size_for(image_size)
    return A.Compose([
        A.Resize(load_size, load_size, interpolation=cv2.INTER_CUBIC),
        A.RandomCrop(image_size, image_size),
        A.HorizontalFlip(p=0.5),
        A.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_pixel_value=255.0),  # to [-1, 1] for tanh
        ToTensorV2(),
    ])


def eval_transform(height: int, width: int | None = None) -> A.Compose:
    """Bicubic resize (square unless `width` is given) and normalise, no augmentation."""
    return A.Compose([
        A.Resize(height, width or height, interpolation=cv2.INTER_CUBIC),
        A.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_pixel_value=255.0),
        ToTensorV2(),
    ])


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation: tensors in [-1, 1] to uint8, channels first as they were."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8_image(tensor: torch.Tensor) -> np.ndarray:
    """A 3xHxW tensor in [-1, 1] to an HxWx3 uint8 array."""
    return to_uint8(tensor).permute(1, 2, 0).cpu().numpy()


class UnpairedDataset(Dataset):
    """Item i is photo i with a painting drawn at random: the 300 paintings are sampled
    independently of the 7,038 photos, and one epoch covers every photo once.

    Randomness (which painting, which crop and flip) comes from (seed, epoch, index), so the
    samples do not depend on worker count or order, and a resumed run sees the same batches.
    """

    def __init__(self, photo_paths, monet_paths, transform: A.Compose, seed: int = 0, holdout_paths=()):
        self.photo_paths, self.monet_paths = list(photo_paths), list(monet_paths)
        self.holdout_paths = list(holdout_paths)  # paintings kept out of training, for the estimate
        self.transform, self.seed, self.epoch = transform, seed, 0

    def __len__(self) -> int:
        return len(self.photo_paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample_seed = np.random.SeedSequence([self.seed, self.epoch, index])
        rng = np.random.default_rng(sample_seed)
        py_random = random.Random(int(sample_seed.generate_state(1)[0]))
        self.transform.set_random_state(rng, py_random)
        monet_path = self.monet_paths[int(rng.integers(len(self.monet_paths)))]
        photo = self.transform(image=load_rgb(self.photo_paths[index]))["image"]
        monet = self.transform(image=load_rgb(monet_path))["image"]
        return photo, monet


class EpochSampler(Sampler[int]):
    """A fresh permutation per epoch from (seed, epoch), cut into whole batches of `batch_size`
    (the global batch); this process gets its `rank`'s share of each, so the processes of a
    distributed run see disjoint parts of one epoch, and one process sees every batch. It can
    start at any batch, which is what resuming mid-epoch needs."""

    def __init__(self, length: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not divide evenly over {world_size} processes")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.share = batch_size // world_size
        self.offset = rank * self.share
        self.epoch = self.start_batch = 0

    @property
    def batches(self) -> int:
        return self.length // self.batch_size  # equal batches keep the step cost and the loss scale steady

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator)
        for batch in range(self.start_batch, self.batches):
            first = batch * self.batch_size + self.offset
            yield from order[first:first + self.share].tolist()

    def __len__(self) -> int:
        return (self.batches - self.start_batch) * self.share


def check_counts(config: CycleGANConfig, data_dir: str | os.PathLike, photos: int, paintings: int,
                 kind: str = "readable") -> None:
    """`batch_size` and `holdout_paintings` against the numbers of photos and paintings in `data_dir`."""
    data_dir = Path(data_dir)
    if config.batch_size > photos:
        raise DataError(f"{data_dir / PHOTO_DIR}: {photos} {kind} photo(s), fewer than batch_size={config.batch_size}; "
                        f"batch_size must be at most {photos}")
    if config.holdout_paintings >= paintings:
        raise DataError(f"holdout_paintings={config.holdout_paintings} leaves none of the {paintings} {kind} "
                        f"paintings in {data_dir / MONET_DIR} to train on; it must be at most {paintings - 1}")


def check_data_fits(config: CycleGANConfig) -> Path:
    """Before a run writes anything: the data folder `config.data_dir` finds (or the search finds)
    has enough images for `batch_size` and `holdout_paintings`, counted from the file names."""
    data_dir = find_data_dir(config.data_dir)
    check_counts(config, data_dir, len(list_images(data_dir / PHOTO_DIR)), len(list_images(data_dir / MONET_DIR)),
                 kind="image")
    return data_dir


def split_paintings(paths: list[Path], holdout: int) -> tuple[list[Path], list[Path]]:
    """(training, held-out): `holdout` (fewer than the paintings, `check_counts`) drawn with a fixed
    seed from the sorted list, so every run and recipe on the same folder holds out the same ones,
    whatever its own seed."""
    held_out = set(random.Random(0).sample(range(len(paths)), holdout))
    return ([p for i, p in enumerate(paths) if i not in held_out],
            [p for i, p in enumerate(paths) if i in held_out])


def build_dataset(config: CycleGANConfig, data_dir: str | os.PathLike) -> UnpairedDataset:
    """The training dataset of `data_dir`, its unreadable files dropped with a warning, and
    `config.holdout_paintings` paintings set aside in `holdout_paths`, never trained on."""
    data_dir = Path(data_dir)
    photos, paintings = readable_images(data_dir / PHOTO_DIR), readable_images(data_dir / MONET_DIR)
    check_counts(config, data_dir, len(photos), len(paintings))
    monets, held_out = split_paintings(paintings, config.holdout_paintings)
    return UnpairedDataset(photos, monets, train_transform(config.image_size), seed=config.seed, holdout_paths=held_out)


class AugmentingLoader(DataLoader):
    """albumentations per image in worker processes: the reference data path."""

    def __init__(self, dataset: UnpairedDataset, config: CycleGANConfig, rank: int = 0, world_size: int = 1):
        sampler = EpochSampler(len(dataset), config.batch_size, config.seed, rank, world_size)
        super().__init__(
            dataset,
            batch_size=sampler.share,
            sampler=sampler,
            num_workers=config.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,  # workers must see set_epoch, so they restart each epoch
            # Each epoch's iterator draws its workers' base seed from this generator, not the global
            # RNG that checkpoints restore (and DiffAugment draws from): a resume then draws the same.
            generator=torch.Generator().manual_seed(config.seed),
        )

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start_batch)


def decode_all(paths, size: int) -> torch.Tensor:
    """N x 3 x size x size uint8 from paths or open files, resized bicubic as the reference does
    (PIL's, which also smooths when shrinking), decoded in threads (PIL releases the GIL)."""
    def decode(path):
        image = read_rgb(path)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return torch.stack(list(pool.map(decode, paths)))


class InMemoryLoader:
    """Every image decoded once, at the jitter's load size (the reference's one bicubic resize),
    into a uint8 tensor on the training device; each batch is randomly cropped and flipped
    there in one indexing operation, so no worker process feeds the accelerator. Same jitter as
    `train_transform`, same sampling and the same (seed, epoch, batch) determinism as the
    albumentations path, not the same pixels (its crop is an index into the resized image, not
    a second resize)."""

    def __init__(self, dataset: UnpairedDataset, config: CycleGANConfig, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.seed = dataset, config.batch_size, config.seed
        self.image_size, self.load_size = config.image_size, load_size_for(config.image_size)
        self.photos = decode_all(dataset.photo_paths, self.load_size).to(device)
        self.monets = decode_all(dataset.monet_paths, self.load_size).to(device)
        self.sampler = EpochSampler(len(dataset), config.batch_size, config.seed, rank, world_size)
        # This process's images of each global batch; the random draws are made for the whole batch.
        self.share = slice(self.sampler.offset, self.sampler.offset + self.sampler.share)
        self.epoch = self.start_batch = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch
        self.sampler.set_epoch(epoch, start_batch)

    def __iter__(self):
        order = torch.tensor(list(self.sampler), dtype=torch.long).view(-1, self.sampler.share)
        for offset, photo_index in enumerate(order):
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, self.start_batch + offset)))
            monet_index = torch.randint(len(self.monets), (self.batch_size,), generator=generator)[self.share]
            photo_jitter = self.draw_jitter(generator)
            monets = self.augment(self.monets[monet_index.to(self.monets.device)], self.draw_jitter(generator))
            yield self.augment(self.photos[photo_index.to(self.photos.device)], photo_jitter), monets

    def draw_jitter(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop corners and flips for the whole global batch, this process's share of them."""
        corners = torch.randint(0, self.load_size - self.image_size + 1, (self.batch_size, 2), generator=generator)
        flip = torch.rand(self.batch_size, generator=generator) < 0.5
        return corners[self.share], flip[self.share]

    def augment(self, images: torch.Tensor, jitter: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Crop load_size images to image_size at the drawn corners, flip where drawn, to [-1, 1]."""
        count, size, device = len(images), self.image_size, images.device
        corners, flip = (t.to(device) for t in jitter)
        steps = torch.arange(size, device=device)
        rows = corners[:, :1] + steps
        cols = corners[:, 1:] + torch.where(flip[:, None], steps.flip(0), steps)  # a flip is reversed columns
        crops = images[torch.arange(count, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return PIXEL_VALUES.to(device)[crops.permute(0, 3, 1, 2).long()]


def make_train_loader(config: CycleGANConfig, dataset: UnpairedDataset, data_path: str = "loader",
                      device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
    """This process's batches for training: "memory" (decoded once, augmented on `device`) or
    "loader"; in a distributed run, its share of each global batch."""
    if data_path == "memory":
        return InMemoryLoader(dataset, config, device, rank, world_size)
    return AugmentingLoader(dataset, config, rank, world_size)


def load_images(paths, height: int, width: int | None = None) -> torch.Tensor:
    """A batch of images resized (square unless `width` is given) and normalised for the
    generators, no augmentation."""
    transform = eval_transform(height, width)
    return torch.stack([transform(image=load_rgb(p))["image"] for p in paths])
