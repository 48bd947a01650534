"""The competition's `images.zip`: every photo translated to a 256x256 RGB JPEG, and a checker."""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .data import load_images, to_uint8_image
from .progress import progress_bar

SUBMISSION_SIZE = 256
COMPETITION_COUNT = (7_000, 10_000)


class SubmissionError(ValueError):
    """The zip would be rejected by the competition (or is not a zip at all)."""


@dataclass
class SubmissionReport:
    path: Path
    n_images: int
    competition_valid: bool  # within the competition's 7,000-10,000 image range

    def __str__(self) -> str:
        verdict = ("valid for the competition" if self.competition_valid else
                   f"well-formed, but a demo: the competition needs {COMPETITION_COUNT[0]:,}-{COMPETITION_COUNT[1]:,}")
        return f"{self.path}: {self.n_images:,} JPEGs of {SUBMISSION_SIZE}x{SUBMISSION_SIZE} RGB, {verdict}"


def encode_jpeg(image: torch.Tensor, quality: int = 95) -> bytes:
    """A 3xHxW tensor in [-1, 1] as 256x256 RGB JPEG bytes (resized if trained at another size)."""
    picture = Image.fromarray(to_uint8_image(image))
    if picture.size != (SUBMISSION_SIZE, SUBMISSION_SIZE):
        picture = picture.resize((SUBMISSION_SIZE, SUBMISSION_SIZE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@torch.inference_mode()
def write_submission_zip(generator, photo_paths, zip_path, image_size: int, batch_size: int = 8,
                         progress: bool = True) -> Path:
    """Translate every photo and store the JPEGs flat in `zip_path` (written under a temporary
    name, then renamed, so an interrupted export never replaces a good zip)."""
    photo_paths = list(photo_paths)
    if not photo_paths:
        raise SubmissionError("write_submission_zip: no photos to translate")
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    device = next(generator.parameters()).device
    generator.eval()
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # JPEGs do not compress further
            batches = range(0, len(photo_paths), batch_size)
            for start in progress_bar(batches, desc="images.zip", unit="batch", disable=not progress):
                batch_paths = photo_paths[start:start + batch_size]
                fakes = generator(load_images(batch_paths, image_size).to(device)).cpu()
                for path, fake in zip(batch_paths, fakes):
                    archive.writestr(f"{Path(path).stem}.jpg", encode_jpeg(fake))
        os.replace(tmp, zip_path)
    finally:
        tmp.unlink(missing_ok=True)
    return zip_path


def check_submission_zip(zip_path, competition: bool = True) -> SubmissionReport:
    """Every entry must be a 256x256 RGB JPEG with a .jpg name; with `competition`, there must
    be 7,000-10,000 of them. Raises SubmissionError listing what is wrong."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise SubmissionError(f"{zip_path}: not a zip file" if zip_path.exists() else f"{zip_path}: does not exist")
    problems, n_images = [], 0
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        if len(set(names)) != len(names):
            problems.append("duplicate file names")
        for name in names:
            if name.endswith("/"):
                continue  # a folder entry holds no data
            if not name.lower().endswith((".jpg", ".jpeg")):
                problems.append(f"{name}: not a .jpg file")
                continue
            try:
                with Image.open(io.BytesIO(archive.read(name))) as image:
                    fmt, size, mode = image.format, image.size, image.mode
            except (OSError, zipfile.BadZipFile) as err:
                problems.append(f"{name}: unreadable ({err})")
                continue
            if fmt != "JPEG":
                problems.append(f"{name}: {fmt} data, expected JPEG")
            elif size != (SUBMISSION_SIZE, SUBMISSION_SIZE):
                problems.append(f"{name}: {size[0]}x{size[1]}, expected {SUBMISSION_SIZE}x{SUBMISSION_SIZE}")
            elif mode != "RGB":
                problems.append(f"{name}: mode {mode}, expected RGB")
            else:
                n_images += 1
    low, high = COMPETITION_COUNT
    in_range = low <= n_images <= high and not problems
    if competition and not problems and not in_range:
        problems.append(f"{n_images:,} images; the competition needs {low:,}-{high:,}")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise SubmissionError(f"{zip_path} would be rejected:\n  {shown}")
    return SubmissionReport(zip_path, n_images, in_range)
