"""Run the primary notebook once per combination of parameters and compare the runs.

    python -m monet_utils.sweep --grid epochs=1,3 cycle_lambda=5,10 --set image_size=64 --out outputs/runs

Each run gets outputs/runs/<name>/ (the executed notebook, config.json, metrics.json, losses.png,
samples.png, checkpoints/, images.zip) and a status.json the sweep keeps. Re-running the same
command skips completed runs and resumes the others from their checkpoints. At the end:
summary.csv, summary.md, loss_comparison.png and samples_comparison.png.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import queue
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the sweep draws files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .config import ConfigError, parse_value, write_json  # noqa: E402
from .data import DataError  # noqa: E402
from .files import write_atomically  # noqa: E402
from .plots import save_figure, smooth  # noqa: E402
from .progress import PrefixedLines  # noqa: E402
from .runner import run_notebook, validate_parameters  # noqa: E402
from .checkpoints import CheckpointError, read_checkpoint  # noqa: E402
from . import cut, cyclegan  # noqa: E402

# MiFID when every run has one (the competition's score); else the cycle loss (cycle_photo +
# cycle_monet over the last tenth of the run), which is only comparable across equal lambdas
# (CUT runs have none: they come after).
SORT_DEFAULT = "auto"
LOSS_NAMES = (*cyclegan.LOSS_NAMES, *cut.LOSS_NAMES)
METRICS = ("final_cycle", "mifid", "best_fid", "seconds_per_step", "wall_seconds", "steps",
           *(f"final_{name}" for name in LOSS_NAMES), *(f"mean_{name}" for name in LOSS_NAMES))


def parse_assignments(items: list[str], option: str, multiple: bool) -> dict:
    """['epochs=1,3', 'lr=2e-4'] -> {'epochs': [1, 3], 'lr': [0.0002]} (or single values)."""
    parsed = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE" + (",VALUE..." if multiple else ""))
        if name in parsed:
            raise ConfigError(f"{option}: parameter {name!r} given twice")
        split = [parse_value(v) for v in values.split(",")] if multiple else parse_value(values)
        parsed[name] = split
    return parsed


def run_name(parameters: dict) -> str:
    """'epochs-3_cycle_lambda-5.0': the grid's parameters, in grid order, safe as a folder name."""
    text = "_".join(f"{name}-{value}" for name, value in parameters.items()) or "default"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def plan_runs(grid: dict[str, list], fixed: dict) -> list[tuple[str, dict]]:
    """Every combination, validated up front: one bad name or value stops the sweep before any run."""
    overlap = sorted(set(grid) & set(fixed))
    if overlap:
        raise ConfigError(f"parameter(s) {overlap} given both in --grid and --set")
    for reserved in ("output_dir",):
        if reserved in grid or reserved in fixed:
            raise ConfigError(f"{reserved!r} is set by the sweep (one folder per run under --out)")
    runs = []
    for values in itertools.product(*grid.values()):
        varying = dict(zip(grid, values))
        parameters = {**fixed, **varying}
        try:
            validate_parameters(parameters)
        except (ConfigError, DataError) as err:
            raise ConfigError(f"run {run_name(varying)}: {err}") from None
        runs.append((run_name(varying), parameters))
    return runs


def read_status(run_dir: Path) -> dict:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def execute_run(name: str, parameters: dict, run_dir: Path, device: str | None) -> dict:
    """One notebook run; a failure is recorded in status.json, never raised."""
    previous = read_status(run_dir)
    if device:
        parameters = {**parameters, "device": device}
    status = {"name": name, "parameters": parameters, "attempts": previous.get("attempts", 0) + 1,
              "status": "running", "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(run_dir / "status.json", status)
    start = time.perf_counter()
    try:
        run_notebook(parameters, run_dir, echo=PrefixedLines(sys.stderr, f"[{name}] "))
        status["status"] = "completed"
    except Exception as err:  # noqa: BLE001 - the sweep goes on; the error is recorded
        status.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    status["wall_seconds"] = round(previous.get("wall_seconds", 0) + time.perf_counter() - start, 2)
    status["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(run_dir / "status.json", status)
    return status


def sweep_devices(devices: str | None) -> list[str | None]:
    """'cuda:0,cuda:1' -> one worker per device; default: every CUDA device when there are
    several, else one worker on the notebook's automatic choice."""
    if devices:
        return [d.strip() for d in devices.split(",") if d.strip()]
    count = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(count)] if count > 1 else [None]


def run_sweep(grid: dict, fixed: dict, out: str | Path, devices: list | None = None,
              sort_by: str = SORT_DEFAULT, log=print) -> list[dict]:
    out = Path(out)
    if sort_by != SORT_DEFAULT and sort_by not in METRICS:
        raise ConfigError(f"--sort-by {sort_by!r} is not a metric; choose from {list(METRICS)} or 'auto'")
    runs = plan_runs(grid, fixed)
    devices = devices or [None]
    pending = [(name, params) for name, params in runs if read_status(out / name).get("status") != "completed"]
    log(f"{len(runs)} run(s) in {out}: {len(runs) - len(pending)} already completed, {len(pending)} to run"
        + (f" on {len(devices)} devices in parallel" if len(devices) > 1 else ""))
    free_devices: queue.Queue = queue.Queue()
    for device in devices:
        free_devices.put(device)

    def work(job):
        name, params = job
        device = free_devices.get()
        try:
            log(f"[{name}] started" + (f" on {device}" if device else ""))
            status = execute_run(name, params, out / name, device)
            log(f"[{name}] {status['status']} in {status['wall_seconds']:.0f} s"
                + (f": {status['error'].splitlines()[0]}" if status["status"] == "failed" else ""))
        finally:
            free_devices.put(device)

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        list(pool.map(work, pending))
    rows = summarize(out, runs, list(grid), sort_by)
    log(f"summary: {out / 'summary.md'}")
    return rows


def run_row(out: Path, name: str, parameters: dict) -> dict:
    status = read_status(out / name)
    row = {"run": name, "status": status.get("status", "not run"), **parameters,
           "wall_seconds": status.get("wall_seconds")}
    metrics_path = out / name / "metrics.json"
    if status.get("status") == "completed" and metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        row.update(steps=metrics["steps"], device=metrics["device"], seconds_per_step=metrics["seconds_per_step"],
                   final_cycle=(metrics["final"]["cycle_photo"] + metrics["final"]["cycle_monet"]
                                if "cycle_photo" in metrics["final"] else None),  # CUT has no cycle
                   mifid=metrics.get("mifid"), best_fid=(metrics.get("best_evaluation") or {}).get("fid"))
        row.update({f"final_{k}": v for k, v in metrics["final"].items()})
        row.update({f"mean_{k}": v for k, v in metrics["mean"].items()})
    elif status.get("status") == "failed":
        row["error"] = status.get("error", "").splitlines()[0] if status.get("error") else ""
    return row


def summarize(out: Path, runs: list[tuple[str, dict]], swept: list[str], sort_by: str = SORT_DEFAULT) -> list[dict]:
    """summary.csv (every parameter) and summary.md (the swept ones), completed runs sorted by
    `sort_by` and failed ones last, and the comparison figures."""
    rows = [run_row(out, name, params) for name, params in runs]
    completed = [r for r in rows if r["status"] == "completed"]
    if sort_by == SORT_DEFAULT:
        sort_by = "mifid" if completed and all(r.get("mifid") is not None for r in completed) else "final_cycle"
    rows = sorted(completed, key=lambda r: (r.get(sort_by) is None, r.get(sort_by))) + \
        [r for r in rows if r["status"] != "completed"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(out / "summary.csv", lambda tmp: tmp.write_text(table.getvalue(), newline=""), "summary")
    shown = ["run", "status", *swept, "steps", "final_cycle", "final_D_monet", "final_D_photo", "final_NCE", "final_D",
             "seconds_per_step", "wall_seconds", "mifid", "best_fid", "error"]
    shown = [c for c in dict.fromkeys(shown) if any(r.get(c) is not None for r in rows)]
    lines = [f"# Sweep summary ({len(completed)} of {len(rows)} runs completed; sorted by {sort_by})", "",
             "| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in shown) + " |" for r in rows]
    write_atomically(out / "summary.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"), "summary")
    plot_comparison(out, [r["run"] for r in completed])
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "/")


def plot_comparison(out: Path, names: list[str]) -> None:
    """Loss curves of every completed run on shared axes, and their sample grids side by side."""
    if not names:
        return
    fig, (ax_g, ax_d) = plt.subplots(1, 2, figsize=(13, 4.5), sharex=True)
    for name in names:
        try:
            history = read_checkpoint(out / name / "checkpoints" / "latest.pt")["history"]
        except CheckpointError:
            continue
        steps = [h["step"] for h in history]
        window = max(1, len(history) // 50)
        cycle = bool(history) and "cycle_photo" in history[0]  # else a CUT run: its NCE and D
        ax_g.plot(steps, smooth([h["cycle_photo"] + h["cycle_monet"] if cycle else h["NCE"] for h in history], window),
                  label=name if cycle else f"{name} (NCE)")
        ax_d.plot(steps, smooth([h["D_monet"] + h["D_photo"] if cycle else h["D"] for h in history], window),
                  label=name if cycle else f"{name} (D)")
    ax_g.set(title="Cycle loss (photo + Monet); CUT's PatchNCE", xlabel="step", ylabel="loss")
    ax_d.set(title="Discriminator loss (D_monet + D_photo); CUT's D", xlabel="step")
    for ax in (ax_g, ax_d):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    save_figure(fig, out / "loss_comparison.png")
    plt.close(fig)

    samples = [(name, out / name / "samples.png") for name in names if (out / name / "samples.png").exists()]
    if samples:
        fig, axes = plt.subplots(1, len(samples), figsize=(4 * len(samples), 7), squeeze=False)
        for ax, (name, path) in zip(axes[0], samples):
            ax.imshow(plt.imread(path))
            ax.set_title(name, fontsize=8)
            ax.axis("off")
        save_figure(fig, out / "samples_comparison.png")
        plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monet_utils.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", nargs="+", default=[], metavar="NAME=V1,V2",
                        help="parameters to sweep; every combination runs")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE", help="parameters fixed for all runs")
    parser.add_argument("--out", default="outputs/runs", help="sweep folder (default outputs/runs)")
    parser.add_argument("--devices", default=None,
                        help="comma-separated devices, one run on each at a time (default: all CUDA GPUs if "
                             "more than one, else one run at a time)")
    parser.add_argument("--sort-by", default=SORT_DEFAULT, help="metric to sort the summary by, lower first (default: mifid when every run has it, else final_cycle)")
    args = parser.parse_args(argv)
    try:
        grid = parse_assignments(args.grid, "--grid", multiple=True)
        fixed = parse_assignments(args.set, "--set", multiple=False)
        rows = run_sweep(grid, fixed, args.out, sweep_devices(args.devices), args.sort_by)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(args.out) / "summary.md").read_text())
    return 1 if any(r["status"] != "completed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
