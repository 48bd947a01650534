"""Figures: images from the folders, augmentations, loss curves, and sample translations."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import load_rgb, to_uint8_image
from .files import write_atomically


def loss_names(record: dict) -> list[str]:
    """The losses of a history record (a model's `loss_names`, in order): all but step and epoch."""
    return [name for name in record if name not in ("step", "epoch")]


def save_figure(fig: plt.Figure, path: str | os.PathLike | None) -> None:
    if path:
        file_format = Path(path).suffix.lstrip(".") or "png"  # the temporary name's suffix is .tmp
        write_atomically(path, lambda tmp: fig.savefig(tmp, format=file_format, dpi=100, bbox_inches="tight"),
                         "figure")


def show_images(paths, title: str = "", columns: int = 5, path=None) -> plt.Figure:
    """The images at `paths` in one row (or more), as stored on disk."""
    rows = -(-len(paths) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image_path in zip(axes.flat, paths):
        ax.imshow(load_rgb(image_path))
        ax.set_title(Path(image_path).name, fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)
    return fig


def show_augmentations(dataset, index: int = 0, count: int = 5, path=None) -> plt.Figure:
    """One photo/painting pair of `dataset` as `count` epochs would see it."""
    fig, axes = plt.subplots(2, count, figsize=(2.4 * count, 5), squeeze=False)
    for column in range(count):
        dataset.set_epoch(column)
        photo, monet = dataset[index]
        for row, (image, label) in enumerate(((photo, "photo"), (monet, "painting"))):
            axes[row, column].imshow(to_uint8_image(image))
            axes[row, column].set_title(f"{label}, epoch {column}", fontsize=8)
            axes[row, column].axis("off")
    dataset.set_epoch(0)
    fig.suptitle("Augmented training samples (resize, random crop, flip)")
    save_figure(fig, path)
    return fig


def smooth(values, window: int) -> np.ndarray:
    """Running mean over `window` steps (shorter at the start), so a curve starts at step 1."""
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    starts = np.arange(1, len(values) + 1) - counts
    return (cumulative[1:] - cumulative[starts]) / counts


def plot_losses(history: list[dict], path=None, window: int | None = None, evaluations: list[dict] | None = None
                ) -> plt.Figure:
    """Smoothed loss curves: generator terms (CUT's PatchNCE among them), then the discriminators'
    (named D...); with `evaluations` (the trainer's), a third panel of FID and MiFID by step, the
    best marked."""
    if not history:
        raise ValueError("plot_losses: the loss history is empty (no training steps were run)")
    steps = [record["step"] for record in history]
    window = window or max(1, len(history) // 50)
    names = loss_names(history[0])
    discriminator_terms = [name for name in names if name.startswith("D")]
    generator_terms = [name for name in names if name not in discriminator_terms]
    fig, axes = plt.subplots(1, 3 if evaluations else 2, figsize=(19.5 if evaluations else 13, 4.5))
    for ax, terms, title in zip(axes, (generator_terms, discriminator_terms), ("Generators", "Discriminators")):
        for term in terms:
            ax.plot(steps, smooth([record[term] for record in history], window), label=term)
        ax.set(title=f"{title} (running mean over {window} steps)", xlabel="step", ylabel="loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if evaluations:
        ax = axes[2]
        for name in ("fid", "mifid"):
            ax.plot([e["step"] for e in evaluations], [e[name] for e in evaluations], marker="o", label=name.upper())
        best = min(evaluations, key=lambda e: e["fid"])
        ax.scatter([best["step"]], [best["fid"]], s=160, marker="*", color="gold", edgecolor="black", zorder=3,
                   label=f"best: FID {best['fid']:.1f} at step {best['step']:,}")
        ax.set(title="Evaluations (lower is better)", xlabel="step", ylabel="score")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    return fig


@torch.inference_mode()
def plot_samples(G_photo2monet, G_monet2photo, photos: torch.Tensor, monets: torch.Tensor, path=None) -> plt.Figure:
    """Columns of samples; rows: photo, photo -> Monet, reconstructed photo, then painting,
    painting -> photo, reconstructed painting. Without `G_monet2photo` (CUT has none): photo,
    photo -> Monet, then painting and painting -> Monet (what CUT's identity term trains). Inputs
    are normalised batches in [-1, 1]."""
    device = next(G_photo2monet.parameters()).device
    photos, monets = photos.to(device), monets.to(device)
    fake_monet = G_photo2monet(photos)
    if G_monet2photo is None:
        rows = [("photo", photos), ("photo -> Monet", fake_monet), ("Monet", monets),
                ("Monet -> Monet", G_photo2monet(monets))]
    else:
        fake_photo = G_monet2photo(monets)
        rows = [
            ("photo", photos), ("photo -> Monet", fake_monet), ("reconstructed photo", G_monet2photo(fake_monet)),
            ("Monet", monets), ("Monet -> photo", fake_photo), ("reconstructed Monet", G_photo2monet(fake_photo)),
        ]
    columns = max(len(photos), len(monets))
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.2 * len(rows)), squeeze=False)
    for row, (label, images) in enumerate(rows):
        for column in range(columns):
            ax = axes[row, column]
            ax.axis("off")
            if column < len(images):
                ax.imshow(to_uint8_image(images[column]))
            if column == 0:
                ax.set_title(label, fontsize=9, loc="left")
    fig.tight_layout()
    save_figure(fig, path)
    return fig
