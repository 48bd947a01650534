"""Command line: `python -m monet_utils run|train|stylize|export|demo-data ...` (README.md, docs/)."""
from __future__ import annotations

import argparse
import os
import sys

from .checkpoints import CheckpointError
from .config import ConfigError
from .data import DataError
from .export import FORMATS, config_path, export_generator
from .launch import (WorkerError, add_config_arguments, argument_values, config_from_arguments, exit_process,
                     train_from_config)
from .progress import output_that_outlives_its_reader
from .runner import NotebookRunError, RunInterrupted, run_main_job
from .stylize import stylize
from .training import TrainingInterrupted


RUN_DESCRIPTION = """\
Execute the notebook (notebooks/monet_cyclegan.ipynb) with papermill: train, plot,
write and check images.zip, estimate its score. The executed notebook and every
output go to --output-dir.

Data: --data-dir, else $DATA_DIR, Kaggle's input folders or data/gan-getting-started;
when none holds photo_jpg/ and monet_jpg/, the synthetic demo data (data/demo/,
made if missing) with CPU-sized parameters.

-p NAME VALUE takes any field of monet_utils/config.py (epochs, cycle_lambda,
image_size, time_budget_hours, gan_mode, ...) and the notebook's own n_samples and
estimate_mifid; VALUE is read as a Python literal (3, 2e-4, True), else as text.
Names and values are checked before anything runs. Running again with the same
--output-dir resumes from its checkpoints/latest.pt (raise epochs or max_steps to
train on); -p resume_from PATH starts from another run's checkpoint."""

TRAIN_DESCRIPTION = """\
Train without the notebook: one process, or -p gpus N for N data-parallel
processes (torchrun, started for you). Data: --data-dir, else $DATA_DIR, Kaggle's
input folders or data/gan-getting-started (no demo fallback). Writes checkpoints/,
metrics.json and config.json to --output-dir; running again resumes. -p takes any
field of monet_utils/config.py."""

STYLIZE_DESCRIPTION = """\
Translate a folder of photos into Monet paintings with a trained generator: a
training checkpoint (a run's best.pt or latest.pt) or a file from `export`. Any
image size; JPEGs out, to a folder or a .zip."""

DEMO_DESCRIPTION = """\
Write the synthetic demo dataset in Kaggle's layout (photo_jpg/, monet_jpg/):
procedural landscapes as photos, and scenes painted in short strokes of broken
colour as the 'Monet' paintings. Files already there are kept. For trying the
tools without Kaggle's images: its scores say nothing about the real task."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monet_utils", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    described = dict(formatter_class=argparse.RawDescriptionHelpFormatter)

    run = commands.add_parser("run", help="the notebook: train and write images.zip", description=RUN_DESCRIPTION,
                              **described)
    add_config_arguments(run)

    demo = commands.add_parser("demo-data", help="write the synthetic demo dataset", description=DEMO_DESCRIPTION,
                               **described)
    demo.add_argument("--out", default=None, help="target folder (default: data/demo)")
    demo.add_argument("--photos", type=int, default=240, help="photos to make (default: %(default)s)")
    demo.add_argument("--paintings", type=int, default=80, help="paintings to make (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="the images' random seed (default: %(default)s)")

    styl = commands.add_parser("stylize", help="translate a folder of photos with a checkpoint",
                               description=STYLIZE_DESCRIPTION, **described)
    styl.add_argument("--checkpoint", required=True,
                      help="a checkpoint (e.g. outputs/checkpoints/best.pt or latest.pt) or a file from `export`")
    styl.add_argument("--input", required=True, help="folder of images (JPEG, PNG, ...; any size)")
    styl.add_argument("--output", required=True, help="folder for the JPEGs, or a path ending in .zip")
    styl.add_argument("--size", type=int, default=None,
                      help="resize every image to SIZE x SIZE (default: keep each size, rounded down to a multiple of 4)")
    styl.add_argument("--batch-size", type=int, default=8, help="images translated at once (default: %(default)s)")
    styl.add_argument("--device", default="auto",
                      help="cpu, cuda or cuda:N (default: %(default)s, a GPU when there is one)")

    train = commands.add_parser("train", help="train without the notebook (-p gpus N: torchrun)",
                                description=TRAIN_DESCRIPTION, **described)
    add_config_arguments(train)

    export = commands.add_parser("export", help="the generator alone: ONNX, TorchScript, safetensors",
                                 description="Write the photo -> Monet generator alone as ONNX, TorchScript or "
                                             "safetensors, its config beside it as OUTPUT.json.")
    export.add_argument("--checkpoint", required=True, help="a training checkpoint, e.g. outputs/checkpoints/latest.pt")
    export.add_argument("--format", required=True, choices=sorted(FORMATS), help="the file's kind")
    export.add_argument("--output", required=True, help="the file to write, e.g. monet.onnx")

    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with output_that_outlives_its_reader():
        return run_command(args)


def run_command(args) -> int:
    try:
        if args.command == "run":
            parameters = argument_values(args)  # -p may also name the notebook's own
            executed = run_main_job(args.data_dir or parameters.pop("data_dir", None) or None,
                                    args.output_dir or parameters.pop("output_dir", "outputs"), parameters)
            print(f"Done. Executed notebook: {executed}")
        elif args.command == "train":
            train_from_config(config_from_arguments(args))
        elif args.command == "export":
            written = export_generator(args.checkpoint, args.format, args.output)
            print(f"Generator written to {written} ({written.stat().st_size / 2 ** 20:.1f} MB), "
                  f"its config to {config_path(written)}")
        elif args.command == "stylize":
            written = stylize(args.checkpoint, args.input, args.output, args.size, args.batch_size, args.device)
            print(f"Stylized images written to {written}")
        else:
            from .demo_data import DEMO_DIR, make_demo_dataset
            root = make_demo_dataset(args.out or DEMO_DIR, args.photos, args.paintings, seed=args.seed)
            print(f"Demo data written to {root}")
    except (RunInterrupted, TrainingInterrupted) as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, every worker stopped at the same step
            print(err, file=sys.stderr)
        return 130  # the shell's code for a run stopped by Ctrl-C
    except (ConfigError, DataError, NotebookRunError, CheckpointError, WorkerError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_process(main())  # `-m monet_utils train` is also torchrun's worker
