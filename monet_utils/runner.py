"""Execute the primary notebook with papermill: the main job, and the building block of sweeps."""
from __future__ import annotations

import os
from pathlib import Path

import papermill

from .config import CycleGANConfig, ConfigError
from .data import DataError, find_data_dir
from .demo_data import DEMO_DIR, make_demo_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "monet_cyclegan.ipynb"
# CPU-sized run on the synthetic data: about 4 minutes of training on 2 cores (bf16 where the CPU
# has it). Six residual blocks is the paper's own generator for images of 128x128 and smaller.
DEMO_PARAMETERS = dict(image_size=64, ngf=32, ndf=32, n_res_blocks=6, epochs=15, decay_epochs=7, num_workers=0)


class NotebookRunError(RuntimeError):
    """A cell of the notebook raised; `executed` is the notebook as far as it ran."""

    def __init__(self, message: str, executed: Path):
        super().__init__(message)
        self.executed = executed


def notebook_parameters(notebook: str | os.PathLike = NOTEBOOK) -> dict:
    """Names and default values of the notebook's `parameters` cell."""
    inferred = papermill.inspect_notebook(str(notebook))
    return {name: info["default"] for name, info in inferred.items()}


def validate_parameters(parameters: dict, notebook: str | os.PathLike = NOTEBOOK) -> None:
    """Fail before anything runs: every name must be a notebook parameter, and the values
    must make a valid config."""
    known = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {unknown}; the parameters cell of {notebook} "
                          f"defines: {sorted(known)}")
    config_keys = set(CycleGANConfig.__dataclass_fields__)
    CycleGANConfig.from_dict({k: v for k, v in parameters.items() if k in config_keys})


def run_notebook(parameters: dict, output_dir: str | os.PathLike, notebook: str | os.PathLike = NOTEBOOK,
                 progress: bool = True) -> Path:
    """Execute `notebook` with `parameters` (output_dir is passed too); the executed copy is
    written to output_dir/<notebook name> even when a cell fails."""
    output_dir = Path(output_dir).resolve()
    parameters = {**parameters, "output_dir": str(output_dir)}
    validate_parameters(parameters, notebook)
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / Path(notebook).name
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, cwd=str(REPO_ROOT),
                                   progress_bar=progress, kernel_name="python3")
    except papermill.PapermillExecutionError as err:
        raise NotebookRunError(
            f"{Path(notebook).name} failed in cell [{err.exec_count}]: {err.ename}: {err.evalue}\n"
            f"The executed notebook, up to the failure, is at {executed}", executed) from None
    return executed


def run_main_job(data_dir: str | None = None, output_dir: str | os.PathLike = "outputs",
                 overrides: dict | None = None) -> Path:
    """Train and write a submission: on the Kaggle data when found, else on the demo data
    (made if missing) with CPU-sized parameters."""
    try:
        data_root = find_data_dir(data_dir)
        parameters = {}
        print(f"Using the dataset at {data_root}")
    except DataError:
        if data_dir:
            raise
        data_root = make_demo_dataset(REPO_ROOT / DEMO_DIR)
        parameters = dict(DEMO_PARAMETERS)
        print(f"No Kaggle data found; using the synthetic demo data at {data_root} with {DEMO_PARAMETERS}")
    parameters.update(overrides or {})
    parameters["data_dir"] = str(Path(data_root).resolve())
    return run_notebook(parameters, output_dir)
