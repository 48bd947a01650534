"""Checkpoint files: written atomically, read as data only, checked against the config.

Training, stylize, sweeps and export all go through here. Checkpoints are loaded with
`torch.load(weights_only=True)`: tensors and plain Python values, never pickled code, so a
checkpoint downloaded from someone else cannot run anything when it is opened.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from . import kaggle_inputs
from .acceleration import resolve_device
from .config import CycleGANConfig
from .files import WriteError, write_atomically
from .models import build_generator

ARCHITECTURE_KEYS = ("ngf", "ndf", "n_res_blocks", "generator", "upsampling", "d_layers")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, not ours, made for another architecture, or could not be written."""


def write_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Written whole or not at all (`files.write_atomically`): the previous checkpoint survives a failure."""
    try:
        return write_atomically(path, lambda tmp: torch.save(state, tmp), "checkpoint")
    except WriteError as err:
        raise CheckpointError(str(err)) from None


def existing_file(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """`path` as a Path; CheckpointError when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is a folder, not a file")
    return path


def resume_from_path(resume_from: str, inputs: str | os.PathLike | None = None) -> Path | None:
    """The checkpoint `resume_from` names: a file, which must exist; or "auto": the one latest.pt
    among Kaggle's attached inputs (`inputs`, default /kaggle/input: a previous session's output),
    None when there is none. Several found is a CheckpointError that names them."""
    if resume_from != "auto":
        return existing_file(resume_from, "resume_from checkpoint") if resume_from else None
    found = kaggle_inputs.find_files(lambda path: path.name == "latest.pt", inputs)
    if len(found) > 1:
        raise CheckpointError(f"resume_from = 'auto' found {len(found)} checkpoints among the inputs "
                              f"({'; '.join(map(str, found))}): set resume_from to the one to go on from")
    return found[0] if found else None


def read_checkpoint(path: str | os.PathLike, lazily: bool = False) -> dict:
    """The state in `path`, read as data only; CheckpointError if it is anything else. `lazily`
    maps the file instead of reading it: tensors that are never used are never read."""
    path = existing_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=lazily)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or unsafe files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "global" in str(err).lower():  # "Unsupported global", "unsupported GLOBAL ... is blocked"
            reason = "it holds Python objects other than tensors and plain values, which are refused unread"
        elif "weights_only" in str(err) or "mmap" in str(err):
            reason = "it is not a PyTorch checkpoint, or a damaged one"
        raise CheckpointError(f"checkpoint {path} could not be read: {reason}") from None
    if not isinstance(state, dict) or "networks" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a monet_utils checkpoint (no 'networks'/'config' entries)")
    return state


def interrupted_message(signal_name: str, output_dir: Path) -> str:
    """The last line of a run stopped by a signal: which checkpoint is kept."""
    checkpoint = output_dir / "checkpoints" / "latest.pt"
    try:
        kept = f"checkpoint {checkpoint} (step {read_checkpoint(checkpoint)['step']}) is kept"
    except CheckpointError:
        kept = "no checkpoint was written yet"
    return f"stopped by {signal_name}: {kept}; run the same command again to resume"


def checkpoint_config(state: dict, path) -> CycleGANConfig:
    try:
        return CycleGANConfig.from_dict(state["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {err}") from None


def check_architecture(saved: dict, config: CycleGANConfig, path) -> None:
    saved = CycleGANConfig().to_dict() | saved  # keys added since the checkpoint was written have their defaults
    if saved["model"] != config.model:
        raise CheckpointError(f"checkpoint {path} holds a {saved['model']!r} model, and this config trains "
                              f"model={config.model!r}: set model={saved['model']!r} to resume it, or train "
                              f"{config.model!r} in another output_dir")
    differ = {k: (saved[k], getattr(config, k)) for k in ARCHITECTURE_KEYS if saved[k] != getattr(config, k)}
    antialiased = CycleGANConfig(model=saved["model"], antialias=saved["antialias"]).antialiased
    if antialiased != config.antialiased:
        differ["antialias"] = ("on" if antialiased else "off", "on" if config.antialiased else "off")
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in differ.items())
        raise CheckpointError(f"checkpoint {path} was made for another architecture ({detail})")


def load_network(net: torch.nn.Module, weights: dict, name: str, path) -> None:
    """`load_state_dict`, with a mismatch between weights and config reported as a CheckpointError."""
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: the {name} weights do not fit the architecture its "
                              f"config describes ({first})") from None


def load_generator(path: str | os.PathLike, direction: str = "photo2monet", device: str = "auto"):
    """The generator of a training checkpoint, in eval mode, and the config it was trained with."""
    state = read_checkpoint(path)
    config = checkpoint_config(state, path)
    generator = build_generator(config)
    name = f"G_{direction}"
    if name not in state["networks"]:
        raise CheckpointError(f"checkpoint {path} holds no {name} generator: a {config.model!r} model "
                              f"translates photo2monet only")
    load_network(generator, state["networks"][name], name, path)
    return generator.to(resolve_device(device)).eval(), config
