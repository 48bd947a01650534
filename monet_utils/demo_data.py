"""A small synthetic dataset in Kaggle's layout, made offline: procedural landscape "photos"
and landscapes rendered as impressionist "paintings" (short brush strokes, a pastel
palette, canvas grain). It is not real data; it lets the whole workflow run anywhere."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .data import DEMO_MARKER, MONET_DIR, PHOTO_DIR
from .files import write_atomically
from .progress import progress_bar

DEMO_DIR = Path("data/demo")


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Value noise in [0, 1]: random values on a coarse grid, upsampled smoothly."""
    grid = rng.random((size // scale + 2, size // scale + 2)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _ridge(rng: np.random.Generator, size: int, base: float, amplitude: float) -> np.ndarray:
    x = np.linspace(0, 2 * np.pi, size)
    line = sum(amplitude / k * np.sin(k * x * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 4, 8))
    return (base + line) * size


def landscape(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """HxWx3 uint8 RGB: sky with clouds and sometimes a sun, layered hills, water or a meadow, trees."""
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    top, horizon = rng.uniform([20, 70, 150], [90, 140, 230]), rng.uniform([150, 180, 200], [230, 225, 250])
    image = np.broadcast_to(top + (horizon - top) * rows, (size, size, 3)).copy()
    clouds = np.clip((_smooth_noise(rng, size, 24) - 0.55) * 3, 0, 1)[..., None] * (1 - rows)
    image = image * (1 - clouds) + 245 * clouds
    if rng.random() < 0.5:
        cv2.circle(image, (int(rng.integers(30, size - 30)), int(rng.integers(20, size // 3))),
                   int(rng.integers(8, 20)), (255, 235, 170), -1, cv2.LINE_AA)
    ys = np.arange(size)[:, None]
    water_line = rng.uniform(0.62, 0.78) * size if rng.random() < 0.5 else None
    for depth in range(3):  # far hills pale and blue, near hills dark and green
        ridge = _ridge(rng, size, base=0.35 + 0.12 * depth, amplitude=rng.uniform(0.03, 0.08))
        colour = rng.uniform([40, 70, 40], [110, 150, 90]) * (1.2 - 0.25 * depth) + (2 - depth) * np.array([25, 25, 40])
        texture = 0.75 + 0.5 * _smooth_noise(rng, size, 6)[..., None]
        mask = ys >= ridge[None, :]
        image = np.where(mask[..., None], colour * texture, image)
    if water_line is not None:
        band = ys >= water_line
        reflection = image[np.clip((2 * water_line - ys).astype(int), 0, size - 1), np.arange(size)[None, :]]
        ripples = 0.85 + 0.15 * np.sin(ys * 1.3 + _smooth_noise(rng, size, 8) * 6)[..., None]
        image = np.where(band[..., None], reflection * ripples * np.array([0.8, 0.9, 1.0]), image)
    for _ in range(int(rng.integers(2, 7))):  # trees
        cx, cy = int(rng.integers(0, size)), int(rng.uniform(0.5, 0.8) * size)
        height = int(rng.integers(size // 8, size // 3))
        cv2.line(image, (cx, cy), (cx, cy - height // 3), (60, 40, 25), max(2, size // 100))
        cv2.ellipse(image, (cx, cy - height // 2), (height // 5, height // 2), 0, 0, 360,
                    tuple(float(c) for c in rng.uniform([20, 50, 20], [60, 100, 50])), -1, cv2.LINE_AA)
    image += rng.normal(0, 4, image.shape)  # sensor noise keeps "photos" crisp rather than flat
    return image.clip(0, 255).astype(np.uint8)


def impressionist(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A painting of `image`: pastel, light palette, many short strokes, canvas grain."""
    size = image.shape[0]
    base = image.astype(np.float32)
    base = 0.65 * base + 0.35 * np.array([235, 215, 200], np.float32)  # lighter, lower contrast, warmer
    hsv = cv2.cvtColor(base.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] = (hsv[..., 1] * 1.5).clip(0, 255)  # Monet's colours stay saturated after lightening
    base = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    canvas = cv2.GaussianBlur(base, (0, 0), size / 60)
    gray = cv2.cvtColor(base.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    angle = np.arctan2(cv2.Sobel(gray, cv2.CV_32F, 0, 1), cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.pi / 2
    n_strokes = int(size * size / 12)
    length, width = max(3, size // 40), max(1, size // 90)
    for y, x in zip(rng.integers(0, size, n_strokes), rng.integers(0, size, n_strokes)):
        colour = base[y, x] + rng.normal(0, 14, 3)  # broken colour: neighbouring strokes differ
        theta = angle[y, x] + rng.normal(0, 0.4)  # strokes follow the edges, loosely
        dx, dy = np.cos(theta) * length, np.sin(theta) * length
        cv2.line(canvas, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)),
                 tuple(float(c) for c in colour.clip(0, 255)), width, cv2.LINE_AA)
    grain = 0.93 + 0.07 * (np.indices((size, size)).sum(0) % 3 == 0)  # woven canvas texture
    return (canvas * grain[..., None]).clip(0, 255).astype(np.uint8)


def make_demo_dataset(root: str | os.PathLike = DEMO_DIR, n_photos: int = 240, n_paintings: int = 80,
                      size: int = 256, seed: int = 0, progress: bool = True) -> Path:
    """Write `n_photos` photos and `n_paintings` paintings as JPEGs under root/photo_jpg and
    root/monet_jpg, plus a marker file saying the data is synthetic. Existing files are kept."""
    root = Path(root)
    # The two domains show different scenes, as in the real (unpaired) data.
    jobs = [(root / PHOTO_DIR / f"demo_photo_{i:04d}.jpg", False) for i in range(n_photos)]
    jobs += [(root / MONET_DIR / f"demo_monet_{i:04d}.jpg", True) for i in range(n_paintings)]
    for folder in (PHOTO_DIR, MONET_DIR):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for path, painted in progress_bar(jobs, desc="demo data", unit="image", disable=not progress):
        image_rng = np.random.default_rng([seed, int(painted), int(path.stem.rsplit("_", 1)[1])])
        if path.exists():
            continue
        image = landscape(image_rng, size)
        if painted:
            image = impressionist(image, image_rng)
        _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        # shared: two commands started at once may both fill data/demo (same seed, same bytes)
        write_atomically(path, lambda tmp: tmp.write_bytes(jpeg.tobytes()), "demo image", shared=True)
    write_atomically(root / DEMO_MARKER, lambda tmp: tmp.write_text(
        "Synthetic demo data made by monet_utils.demo_data: procedural landscapes, not Kaggle's images.\n"),
        "marker", shared=True)
    return root
