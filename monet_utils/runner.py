"""Execute the primary notebook with papermill: the main job, and the building block of sweeps.

The kernel's output (prints, the training and export progress bars) streams to the terminal
while the notebook runs. Ctrl-C or SIGTERM is passed on to the kernel as an interrupt: training
stops after its current step with a checkpoint saved, and the run ends with one line saying
which checkpoint is kept.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import papermill
from jupyter_client.manager import AsyncKernelManager

from .acceleration import resolve_device, resolve_speed
from .checkpoints import check_architecture, interrupted_message, read_checkpoint, resume_from_path
from .config import CycleGANConfig, ConfigError
from .data import DataError, check_data_fits, find_data_dir
from .demo_data import DEMO_DIR, make_demo_dataset
from .evaluation import check_fid_weights
from .files import WriteError, write_atomically
from .launch import process_count

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "monet_cyclegan.ipynb"
CONFIG_FIELDS = set(CycleGANConfig.__dataclass_fields__)
UNKNOWN_PARAMETER = "Passed unknown parameter: "  # papermill.execute's warning
# CPU-sized run on the synthetic data: about 7 minutes of training on 2 cores (bf16 where the CPU
# has it). Six residual blocks is the paper's own generator for images of 128x128 and smaller.
DEMO_PARAMETERS = dict(image_size=64, ngf=32, ndf=32, n_res_blocks=6, epochs=15, decay_epochs=7, num_workers=0)


class NotebookRunError(RuntimeError):
    """A cell of the notebook raised; `executed` is the notebook as far as it ran."""

    def __init__(self, message: str, executed: Path):
        super().__init__(message)
        self.executed = executed


class RunInterrupted(NotebookRunError):
    """SIGINT or SIGTERM stopped the run; the message says which checkpoint is kept."""


class KernelInterrupter:
    """While a notebook runs, SIGINT (Ctrl-C) and SIGTERM are passed on to its kernel as an
    interrupt (the kernel runs in a session of its own, so a terminal's Ctrl-C never reaches it),
    and this process waits for the cell to stop. A second signal stops at once. Handlers can
    only be set from the main thread: elsewhere (a sweep's workers) this does nothing."""

    def __init__(self):
        self.kernels: list[AsyncKernelManager] = []
        self.received: str | None = None

    def manager_class(self) -> type:
        """A kernel manager class that tells this object about every kernel it starts."""
        kernels = self.kernels

        class RememberedKernelManager(AsyncKernelManager):
            def __init__(self, **kwargs):
                # Unix sockets, one set per kernel (parallel sweeps): local only, and no "running
                # over TCP without encryption" warning from the kernel.
                if os.name == "posix":
                    ipc_prefix = os.path.join(tempfile.gettempdir(), f"monet-kernel-{uuid.uuid4().hex[:12]}")
                    kwargs.update(transport="ipc", ip=ipc_prefix)
                super().__init__(**kwargs)
                kernels.append(self)

        return RememberedKernelManager

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def on_signal(self, signum, frame):
        pids = [km.provisioner.pid for km in self.kernels if km.provisioner and getattr(km.provisioner, "pid", None)]
        if self.received or not pids:
            self.received = self.received or signal.Signals(signum).name
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        print(f"\n{self.received}: interrupting the notebook (Ctrl-C again stops at once)", file=sys.stderr, flush=True)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGINT)  # the kernel alone: DataLoader workers must not get it
            except ProcessLookupError:
                pass


class ExecutedNotebookWriter:
    """papermill's I/O for the executed notebook (paths under `SCHEME`): each save is written
    whole (`files.write_atomically`), and a save that fails, on a full disk say, is remembered
    instead of raised, so the run goes on and its own error, if it has one, is the one reported."""

    SCHEME = "monet-executed://"

    def __init__(self):
        self.failures: dict[str, str] = {}  # path -> why its last save failed

    def write(self, buf: str, path: str) -> None:
        target = path[len(self.SCHEME):]
        try:
            write_atomically(target, lambda tmp: tmp.write_text(buf, encoding="utf-8"), "executed notebook")
            self.failures.pop(target, None)
        except WriteError as err:
            self.failures[target] = str(err)

    def read(self, path: str):
        raise NotImplementedError("the executed notebook is only written")

    listdir = read

    def pretty_path(self, path: str) -> str:
        return path[len(self.SCHEME):]


EXECUTED_NOTEBOOKS = ExecutedNotebookWriter()
papermill.iorw.papermill_io.register(ExecutedNotebookWriter.SCHEME, EXECUTED_NOTEBOOKS)


class Echo:
    """The kernel's output, passed on as it comes; `end_line` ends a progress bar that a failed
    cell left open, so that what is printed next starts a line of its own."""

    def __init__(self, target):
        self.target, self.at_line_start = target, True

    def write(self, text: str) -> None:
        if text:
            self.target.write(text)
            self.at_line_start = text.endswith("\n")

    def flush(self) -> None:
        self.target.flush()

    def end_line(self) -> None:
        if not self.at_line_start:
            self.write("\n")
            self.flush()


class ConfigFieldsAreKnown(logging.Filter):
    """papermill warns of a parameter its parameters cell lacks; the notebook reads every config
    field all the same (CycleGANConfig.from_notebook), so for those the warning is false."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(UNKNOWN_PARAMETER) and message[len(UNKNOWN_PARAMETER):] in CONFIG_FIELDS)


def notebook_parameters(notebook: str | os.PathLike = NOTEBOOK) -> dict:
    """Names and default values of the notebook's `parameters` cell."""
    inferred = papermill.inspect_notebook(str(notebook))
    return {name: info["default"] for name, info in inferred.items()}


def validate_parameters(parameters: dict, notebook: str | os.PathLike = NOTEBOOK) -> CycleGANConfig:
    """Fail before anything runs: every name must be a config field or a notebook parameter, and
    the values must make a valid config for a device this machine has."""
    known = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(known) - CONFIG_FIELDS)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}: -p takes a config field (monet_utils/config.py) "
                          f"or one of the notebook's own: {sorted(set(known) - CONFIG_FIELDS)}")
    config = CycleGANConfig.from_dict({k: v for k, v in parameters.items() if k in CONFIG_FIELDS})
    resolve_speed(config, resolve_device(config.device))  # e.g. amp='fp16' or device='cuda' without a GPU
    process_count(config)  # gpus beyond the visible devices, or a batch that does not split over them
    check_data_fits(config)  # batch_size and holdout_paintings against the images there
    estimate = str(parameters.get("estimate_mifid", known.get("estimate_mifid"))) == "True"  # defaults are source text
    check_fid_weights(config, estimate)
    return config


def check_resumable(config: CycleGANConfig, output_dir: Path) -> None:
    """A checkpoint already in `output_dir` is resumed, else `resume_from`: refuse, before
    anything is written, one that is missing or made for another architecture."""
    checkpoint = output_dir / "checkpoints" / "latest.pt"
    if not checkpoint.exists():
        checkpoint = resume_from_path(config.resume_from)
        if checkpoint is None:
            return
    check_architecture(read_checkpoint(checkpoint)["config"], config, checkpoint)


def run_notebook(parameters: dict, output_dir: str | os.PathLike, notebook: str | os.PathLike = NOTEBOOK,
                 echo=None) -> Path:
    """Execute `notebook` with `parameters` (output_dir is passed too); the executed copy is
    written to output_dir/<notebook name> even when a cell fails. The kernel's output streams
    to `echo` (a text stream, or None for silence) as it comes."""
    output_dir = Path(output_dir).resolve()
    parameters = {**parameters, "output_dir": str(output_dir)}
    config = validate_parameters(parameters, notebook)
    check_resumable(config, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / Path(notebook).name
    if echo:
        print(f"Running {Path(notebook).name} -> {executed} (its output follows)", file=echo, flush=True)
    interrupter = KernelInterrupter()
    echo = echo and Echo(echo)
    quiet = ConfigFieldsAreKnown()
    logging.getLogger("papermill").addFilter(quiet)
    try:
        with interrupter:
            papermill.execute_notebook(str(notebook), ExecutedNotebookWriter.SCHEME + str(executed),
                                       parameters=parameters, cwd=str(REPO_ROOT), progress_bar=False,
                                       kernel_name="python3", stdout_file=echo, stderr_file=echo,
                                       kernel_manager_class=interrupter.manager_class())
    except (papermill.PapermillExecutionError, KeyboardInterrupt) as err:
        if echo:
            echo.end_line()
        unwritten = EXECUTED_NOTEBOOKS.failures.pop(str(executed), None)
        where = (f"The executed notebook could not be written: {unwritten}" if unwritten else
                 f"The executed notebook, up to the failure, is at {executed}")
        if interrupter.received:
            raise RunInterrupted(interrupted_message(interrupter.received, output_dir), executed) from None
        if isinstance(err, KeyboardInterrupt):
            raise
        raise NotebookRunError(f"{Path(notebook).name} failed in cell [{err.exec_count}]: {err.ename}: "
                               f"{err.evalue}\n{where}", executed) from None
    finally:
        logging.getLogger("papermill").removeFilter(quiet)
    unwritten = EXECUTED_NOTEBOOKS.failures.pop(str(executed), None)
    if unwritten:  # the run itself went through; its outputs are in output_dir
        raise WriteError(f"the run finished, but {unwritten}")
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
        if data_dir or os.environ.get("DATA_DIR"):  # a folder the user named must be right
            raise
        data_root = make_demo_dataset(REPO_ROOT / DEMO_DIR)
        parameters = dict(DEMO_PARAMETERS)
        print(f"No Kaggle data found; using the synthetic demo data at {data_root} with {DEMO_PARAMETERS}")
    parameters.update(overrides or {})
    parameters["data_dir"] = str(Path(data_root).resolve())
    return run_notebook(parameters, output_dir, echo=sys.stderr)
