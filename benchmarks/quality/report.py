"""The quality benchmark's table and figures, from the runs' evaluations.json files."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.io import write_png  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from monet_utils.files import write_atomically  # noqa: E402

BAR = 0.8  # a recipe that learned a style: its best FID at most this fraction of the photos' own


def finished_runs(out: Path) -> dict:
    """Every run with an evaluations.json under `out`, by name."""
    runs = {}
    for path in sorted(out.glob("*/evaluations.json")):
        run = json.loads(path.read_text())
        runs[run["name"]] = run
    return runs


def save_full_size(translations: torch.Tensor, photos: torch.Tensor, path: Path, zoom: int = 2) -> None:
    """Photos above their translations (uint8), each pixel `zoom` x `zoom`: a mosaic of dots shows."""
    grid = make_grid(torch.cat([photos, translations]), nrow=len(photos), padding=2, pad_value=255)
    grid = grid.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: write_png(grid, str(tmp)), "figure")


def reference_fid(runs: dict, key: str) -> float | None:
    """A reference score ("baseline", "paintings", "colour") from the first run that measured it."""
    return next((run[key]["fid"] for run in runs.values() if run.get(key)), None)


def plot_curve(runs: dict, path: Path) -> None:
    """FID by step of every run, with the references as lines."""
    figure, axis = plt.subplots(figsize=(11, 4.8))
    for i, (name, run) in enumerate(runs.items()):
        steps, fids = zip(*[(e["step"], e["fid"]) for e in run["evaluations"]])
        axis.plot(steps, fids, marker="o", markersize=3, color=f"C{i % 10}", linestyle="-" if i < 10 else "--",
                  label=name)
    baseline, colour, paintings = (reference_fid(runs, key) for key in ("baseline", "colour", "paintings"))
    if baseline:
        axis.axhline(baseline, color="gray", linestyle="--", label=f"the photos, no style ({baseline:.1f})")
        axis.axhline(BAR * baseline, color="gray", linestyle=":", label=f"{BAR} x the photos ({BAR * baseline:.1f})")
    if colour:
        axis.axhline(colour, color="tab:brown", linestyle="--", label=f"the photos in Monet's colours ({colour:.1f})")
    if paintings:
        axis.axhline(paintings, color="black", linestyle="-.", label=f"Monet's training paintings ({paintings:.1f})")
    reference = next(iter(runs.values()))["reference"] if runs else ""
    axis.set(xlabel="training step", ylabel="FID (lower is better)", title=f"FID by step ({reference})")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    axis.grid(alpha=0.3)
    figure.subplots_adjust(left=0.07, right=0.6, top=0.92, bottom=0.11)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"), "figure")
    plt.close(figure)


def print_table(runs: dict) -> None:
    if not runs:
        print("No finished runs yet.")
        return
    first = next(iter(runs.values()))
    baseline, paintings, colour = (reference_fid(runs, key) for key in ("baseline", "paintings", "colour"))
    print(f"\nFID ({first['reference']}): the photos untouched {baseline:.1f}, in Monet's colours {colour:.1f}"
          + (f", Monet's training paintings {paintings:.1f}" if paintings else "")
          + f". Artifacts: spectral energy in peaks on the 8-pixel lattice, x1000 (the photos "
          f"{1000 * first['photo_artifacts']:.2f}).")
    width = max(map(len, runs)) + 1
    print(f"{'run':<{width}} {'steps':>7} {'s/step':>7} {'best FID':>9} {'at step':>8} {'last FID':>9} "
          f"{'/ photos':>9} {'artifacts':>9}")
    for name, run in runs.items():
        evaluations = run["evaluations"]
        best = min(evaluations, key=lambda e: e["fid"])
        print(f"{name:<{width}} {run['steps']:>7} {run['train_seconds'] / run['steps']:>7.3f} {best['fid']:>9.1f} "
              f"{best['step']:>8} {evaluations[-1]['fid']:>9.1f} {best['fid'] / baseline:>9.2f} "
              f"{1000 * run['artifacts']:>9.2f}")
