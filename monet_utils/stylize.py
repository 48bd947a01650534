"""Translate image files with a trained generator: the one path behind `images.zip` and `stylize`.

Decoding and JPEG encoding run in a thread pool (PIL releases the GIL for both) while the
generator works on the current batch, so export speed is set by the generator.
"""
from __future__ import annotations

import io
import zipfile
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from .data import DataError, load_images, oriented_size, readable_images, to_uint8_image
from .progress import progress_bar
from .acceleration import inference_autocast
from .export import load_photo2monet
from .files import replaced_on_success, write_atomically

PREFETCH_BATCHES = 2
PIXELS_OF_256 = 256 * 256


def encode_jpeg(image: torch.Tensor, size: int | None = None, quality: int = 95) -> bytes:
    """A 3xHxW tensor in [-1, 1] as RGB JPEG bytes, resized to size x size if given."""
    picture = Image.fromarray(to_uint8_image(image))
    if size and picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def input_size(path, image_size: int | None) -> tuple[int, int]:
    """(height, width) the generator sees: image_size square, or the image's own size rounded
    down to a multiple of 4 (two stride-2 downsamples, two upsamples)."""
    if image_size:
        return image_size, image_size
    width, height = oriented_size(path)
    if min(width, height) < 4:
        raise DataError(f"{path}: {width}x{height} is too small to translate")
    return height // 4 * 4, width // 4 * 4


def plan_batches(paths, image_size: int | None, batch_size: int,
                 max_pixels: int | None = None) -> list[tuple[list, tuple[int, int]]]:
    """Consecutive images of one input size go together, since a batch needs equal sizes, up to
    `batch_size` images and `max_pixels` pixels (default: `batch_size` images of 256x256), so a
    batch of 12-megapixel photos is one photo, not eight (about 3 GB for the first feature map
    alone, in fp32)."""
    max_pixels = max_pixels or batch_size * PIXELS_OF_256
    batches: list[tuple[list, tuple[int, int]]] = []
    for path in paths:
        size = input_size(path, image_size)
        fits = batches and (len(batches[-1][0]) + 1) * size[0] * size[1] <= max_pixels
        if fits and batches[-1][1] == size and len(batches[-1][0]) < batch_size:
            batches[-1][0].append(path)
        else:
            batches.append(([path], size))
    return batches


def output_names(paths) -> dict:
    """path -> '<stem>.jpg'; inputs that share a stem (a.png, a.jpg) keep their suffix in the
    name (a_png.jpg, a_jpg.jpg), so no output replaces another."""
    paths = list(paths)
    stems = Counter(Path(p).stem for p in paths)
    names = {p: f"{Path(p).stem}.jpg" if stems[Path(p).stem] == 1 else
             f"{Path(p).stem}_{Path(p).suffix.lstrip('.')}.jpg" for p in paths}
    clashes = sorted(name for name, count in Counter(names.values()).items() if count > 1)
    if clashes:
        raise DataError(f"these inputs would be written under the same output name: {', '.join(clashes[:5])}; "
                        "rename them")
    return names


@torch.inference_mode()
def translate_to_jpegs(generator, paths, image_size: int | None = None, output_size: int | None = None,
                       batch_size: int = 8, workers: int = 4, progress: bool = True, desc: str = "translating"):
    """Yield (file name, JPEG bytes) for every image in `paths`, in order."""
    # An ONNX generator has no parameters and runs on the CPU.
    device = next(generator.parameters(), torch.empty(0)).device
    generator.eval()
    paths = list(paths)
    names = output_names(paths)
    batches = plan_batches(paths, image_size, batch_size)
    bar = progress_bar(total=sum(len(b) for b, _ in batches), desc=desc, unit="image", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def prefetch(batch):
            batch_paths, (height, width) = batch
            return pool.submit(load_images, batch_paths, height, width)

        loading = deque(prefetch(batch) for batch in batches[:PREFETCH_BATCHES])
        encoding: deque = deque()
        for index, (batch_paths, _) in enumerate(batches):
            images = loading.popleft().result()
            if index + PREFETCH_BATCHES < len(batches):
                loading.append(prefetch(batches[index + PREFETCH_BATCHES]))
            fakes = generate(generator, images, device, batch_paths)
            encoding.extend((names[p], pool.submit(encode_jpeg, fake, output_size)) for p, fake in zip(batch_paths, fakes))
            while len(encoding) > 2 * batch_size:  # bounded: memory stays flat on 7,038 photos
                name, future = encoding.popleft()
                yield name, future.result()
                bar.update()
        for name, future in encoding:
            yield name, future.result()
            bar.update()
    bar.close()


def generate(generator, images: torch.Tensor, device: torch.device, paths) -> torch.Tensor:
    """The generator's output for `images` on `device`, in the device's inference precision; a
    batch that runs out of GPU memory is split in halves and tried again."""
    try:
        with inference_autocast(device):
            return generator(images.to(device, non_blocking=True)).float().cpu()
    except torch.cuda.OutOfMemoryError:
        if len(images) == 1:
            height, width = images.shape[-2:]
            raise DataError(f"{paths[0]}: {width}x{height} does not fit in GPU memory even alone; "
                            "pass --size to translate smaller, or --device cpu") from None
        torch.cuda.empty_cache()
        half = len(images) // 2
        return torch.cat([generate(generator, images[:half], device, paths[:half]),
                          generate(generator, images[half:], device, paths[half:])])


def write_zip(jpegs, zip_path) -> Path:
    """Stream (name, bytes) pairs into `zip_path`, whole or not at all: an interrupted export never
    replaces a good zip."""
    with replaced_on_success(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # JPEGs do not compress
            for name, data in jpegs:
                archive.writestr(name, data)
    return Path(zip_path)


def write_folder(jpegs, folder) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in jpegs:
        write_atomically(folder / name, lambda tmp: tmp.write_bytes(data), "image")
    return folder


def stylize(checkpoint, input_dir, output, size: int | None = None, batch_size: int = 8, device: str = "auto",
            workers: int = 4, progress: bool = True) -> Path:
    """Translate every image in `input_dir` with the photo -> Monet generator of `checkpoint` (a
    training checkpoint, or a file written by `monet_utils export`).

    Images keep their size (rounded down to a multiple of 4) unless `size` is given, then they
    come out size x size. `output` ending in .zip gets a zip, anything else a folder of JPEGs.
    """
    input_dir, output = Path(input_dir), Path(output)
    if not input_dir.is_dir():
        raise DataError(f"stylize: input folder {input_dir} " + ("is a file" if input_dir.exists() else "does not exist"))
    if output.resolve().is_relative_to(input_dir.resolve()):
        raise DataError(f"stylize: output {output} is inside the input folder {input_dir}: it could overwrite "
                        "the photos it is made from; write it somewhere else")
    generator = load_photo2monet(checkpoint, device)
    paths = readable_images(input_dir)
    jpegs = translate_to_jpegs(generator, paths, image_size=size, batch_size=batch_size, workers=workers,
                               progress=progress, desc="stylize")
    return write_zip(jpegs, output) if output.suffix.lower() == ".zip" else write_folder(jpegs, output)
