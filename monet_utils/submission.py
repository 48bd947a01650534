"""The competition's `images.zip`: every photo translated to a 256x256 RGB JPEG, and a checker;
and, for a notebook that only submits, the trained generator found among its attached inputs."""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import kaggle_inputs
from .checkpoints import CheckpointError, checkpoint_config, read_checkpoint
from .config import CycleGANConfig
from .export import config_path, load_photo2monet
from .stylize import translate_to_jpegs, write_zip

SUBMISSION_SIZE = 256
COMPETITION_COUNT = (7_000, 10_000)
# A 256x256 JPEG is at most about 200 KB even at quality 100; an entry above this is no image of ours,
# and is refused from its declared size before a byte of it is read.
MAX_ENTRY_BYTES = 2 ** 21


class SubmissionError(ValueError):
    """The zip would be rejected by the competition (or is not a zip at all)."""


@dataclass
class SubmissionReport:
    path: Path
    n_images: int
    competition_valid: bool  # within the competition's 7,000-10,000 image range

    def __str__(self) -> str:
        verdict = ("valid for the competition" if self.competition_valid else
                   f"well-formed, but not competition-valid: the competition needs "
                   f"{COMPETITION_COUNT[0]:,}-{COMPETITION_COUNT[1]:,}")
        return f"{self.path}: {self.n_images:,} JPEGs of {SUBMISSION_SIZE}x{SUBMISSION_SIZE} RGB, {verdict}"


def write_submission_zip(generator, photo_paths, zip_path, image_size: int, batch_size: int = 8, workers: int = 4,
                         progress: bool = True) -> Path:
    """Translate every photo at the training size and store 256x256 JPEGs flat in `zip_path`."""
    photo_paths = list(photo_paths)
    if not photo_paths:
        raise SubmissionError("write_submission_zip: no photos to translate")
    jpegs = translate_to_jpegs(generator, photo_paths, image_size=image_size, output_size=SUBMISSION_SIZE,
                               batch_size=batch_size, workers=workers, progress=progress, desc="images.zip")
    return write_zip(jpegs, zip_path)


def entry_name_problem(name: str) -> str | None:
    """Why a zip entry name is not a plain file at the top of the zip, or None."""
    if name.endswith("/"):
        return "a folder entry; the competition expects only image files at the top of the zip"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path; expected a plain file name"
    if ".." in name.replace("\\", "/").split("/"):
        return "a path that leaves the zip's folder ('..'); expected a plain file name"
    if "/" in name or "\\" in name:
        return "inside a folder; images must sit at the top of the zip"
    return None


def entry_problem(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> str | None:
    """Why `entry` is not a 256x256 RGB JPEG at the top of the zip, or None. Sizes are checked
    from the zip's and the image's headers before anything is decoded, and the reading is
    capped, so a small zip that inflates to gigabytes costs no memory."""
    unsafe = entry_name_problem(entry.filename)
    if unsafe:
        return unsafe
    if not entry.filename.lower().endswith((".jpg", ".jpeg")):
        return "not a .jpg file"
    if entry.file_size > MAX_ENTRY_BYTES:
        return f"{entry.file_size:,} bytes, at most {MAX_ENTRY_BYTES:,} expected of a {SUBMISSION_SIZE}x{SUBMISSION_SIZE} JPEG"
    try:
        with archive.open(entry) as stream:
            data = stream.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            return f"more than {MAX_ENTRY_BYTES:,} bytes"
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                return f"{image.format} data, expected JPEG"
            if image.size != (SUBMISSION_SIZE, SUBMISSION_SIZE):
                return f"{image.size[0]}x{image.size[1]}, expected {SUBMISSION_SIZE}x{SUBMISSION_SIZE}"
            if image.mode != "RGB":
                return f"mode {image.mode}, expected RGB"
            image.load()  # decodes every pixel: a truncated JPEG fails here, not at Kaggle
    except (OSError, zipfile.BadZipFile, Image.DecompressionBombError) as err:
        return f"unreadable ({err})"
    return None


def check_submission_zip(zip_path, competition: bool = True) -> SubmissionReport:
    """Every entry must be a plain-named, fully decodable 256x256 RGB JPEG with a .jpg name; with
    `competition`, there must be 7,000-10,000 of them. Raises SubmissionError listing what is
    wrong; without `competition` the report says whether the count would pass."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise SubmissionError(f"{zip_path}: not a zip file" if zip_path.exists() else f"{zip_path}: does not exist")
    problems, n_images = [], 0
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.infolist()
        if len({e.filename for e in entries}) != len(entries):
            problems.append("duplicate file names")
        for entry in entries:
            problem = entry_problem(archive, entry)
            if problem:
                problems.append(f"{entry.filename}: {problem}")
            else:
                n_images += 1
    low, high = COMPETITION_COUNT
    in_range = low <= n_images <= high and not problems
    if not entries:
        problems.append("no images: the zip is empty")
    elif competition and not problems and not in_range:
        problems.append(f"{n_images:,} images; the competition needs {low:,}-{high:,}")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise SubmissionError(f"{zip_path} would be rejected:\n  {shown}")
    return SubmissionReport(zip_path, n_images, in_range)


# A training run's output holds both: best.pt is the one `submit_from = "best"` would submit.
RUN_CHECKPOINTS = ("best.pt", "latest.pt")
EXPORTED_SUFFIXES = (".onnx", ".pt", ".safetensors")  # `monet_utils export`, with its config beside as <name>.json


def trained_generators(root=None) -> list[Path]:
    """The generators among the attached inputs (`root`, default /kaggle/input): each training run's
    best.pt (its latest.pt where it has none), and each exported generator."""
    def is_generator(path: Path) -> bool:
        return path.name in RUN_CHECKPOINTS or (path.suffix in EXPORTED_SUFFIXES and config_path(path).is_file())
    found = kaggle_inputs.find_files(is_generator, root)
    best_of_a_run = {path.with_name("best.pt") for path in found if path.name == "best.pt"}
    return [path for path in found if not (path.name == "latest.pt" and path.with_name("best.pt") in best_of_a_run)]


def find_generator(choice: str = "", root=None) -> Path:
    """The generator to submit: `choice` when it is a file, else the one generator among the inputs
    whose path contains `choice` (empty: the only one there). None, or several without a choice,
    is a SubmissionError of one line that lists what was found."""
    if choice and Path(choice).is_file():
        return Path(choice)
    root = Path(root or kaggle_inputs.input_root())
    found = trained_generators(root)
    matching = [path for path in found if choice in str(path)]
    if len(matching) == 1:
        return matching[0]
    listed = "; ".join(map(str, found))
    if not found:
        raise SubmissionError(f"no trained generator among the inputs in {root}: Add Input the output of a training "
                              f"notebook (its checkpoints/best.pt or latest.pt), or a file from `monet_utils export`")
    if not matching:
        raise SubmissionError(f"generator = {choice!r} is none of the generators in {root}: {listed}")
    raise SubmissionError(f"{len(matching)} generators in {root}{f' match {choice!r}' if choice else ''}: {listed}; "
                          f"set generator to (part of) the path of the one to submit")


def load_submission_generator(path: Path, device: str = "auto"):
    """(generator, image size it was trained at) of a training checkpoint or an exported file; a
    file that is damaged or not a generator of ours is a CheckpointError of one line."""
    generator = load_photo2monet(path, device)
    beside = config_path(path)
    try:
        config = (CycleGANConfig.from_dict(json.loads(beside.read_text())["config"]) if beside.is_file() else
                  checkpoint_config(read_checkpoint(path, lazily=True), path))
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: its config could not be read ({err})") from None
    return generator, config.image_size
