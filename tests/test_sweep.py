import csv
import importlib.util
import json

import pytest
import torch

from monet_utils import sweep
from monet_utils.config import ConfigError
from monet_utils.demo_data import make_demo_dataset
from monet_utils.training import CycleGANTrainer

from .test_recipe import BatchesOf

if importlib.util.find_spec("tensorboard"):
    from tensorboard.backend.event_processing import event_multiplexer

TINY = dict(image_size=32, ngf=4, ndf=4, n_res_blocks=1, batch_size=2, num_workers=0, n_samples=2,
            tensorboard_every=1, estimate_mifid=False)  # the Inception pass is tested in test_notebook; here it only costs time


@pytest.fixture
def demo(tmp_path):
    return str(make_demo_dataset(tmp_path / "demo", n_photos=6, n_paintings=3, progress=False))


def test_parse_assignments_and_run_names():
    grid = sweep.parse_assignments(["epochs=1,3", "cycle_lambda=5.0,10"], "--grid", multiple=True)
    assert grid == {"epochs": [1, 3], "cycle_lambda": [5.0, 10]}
    assert sweep.parse_assignments(["data_dir=/x/y"], "--set", multiple=False) == {"data_dir": "/x/y"}
    assert sweep.run_name({"epochs": 3, "data_dir": "/a b"}) == "epochs-3_data_dir--a-b"
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        sweep.parse_assignments(["epochs"], "--grid", multiple=True)


def test_bad_sweeps_are_rejected_before_anything_runs(tmp_path, demo):
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match="unknown parameter.*epoch_count"):
        sweep.run_sweep({"epoch_count": [1, 2]}, {"data_dir": demo}, out)
    with pytest.raises(ConfigError, match=r"run cycle_lambda--1.*'cycle_lambda'"):
        sweep.run_sweep({"cycle_lambda": [5, -1]}, {"data_dir": demo}, out)
    with pytest.raises(ConfigError, match="--sort-by 'beauty'"):
        sweep.run_sweep({"epochs": [1]}, {"data_dir": demo}, out, sort_by="beauty")
    with pytest.raises(ConfigError, match="both in --grid and --set"):
        sweep.run_sweep({"epochs": [1]}, {"epochs": 2}, out)
    with pytest.raises(ConfigError, match="run batch_size-8: .*batch_size must be at most 6"):
        sweep.run_sweep({"batch_size": [2, 8]}, {"data_dir": demo}, out)
    assert not out.exists()
    assert sweep.main(["--grid", "epochz=1", "--out", str(out)]) == 2


def test_grid_runs_in_parallel_skips_completed_and_resumes_interrupted(tmp_path, demo):
    out = tmp_path / "runs"
    grid = {"cycle_lambda": [5.0, 10.0], "max_steps": [1, 2]}
    rows = sweep.run_sweep(grid, {**TINY, "data_dir": demo}, out, devices=["cpu", "cpu"], log=lambda *_: None)
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert [r["final_cycle"] for r in rows] == sorted(r["final_cycle"] for r in rows)
    with open(out / "summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert {row["run"] for row in table} == {"cycle_lambda-5.0_max_steps-1", "cycle_lambda-5.0_max_steps-2",
                                             "cycle_lambda-10.0_max_steps-1", "cycle_lambda-10.0_max_steps-2"}
    assert "| run | status | cycle_lambda | max_steps |" in (out / "summary.md").read_text()
    for name in ("loss_comparison.png", "samples_comparison.png"):
        assert (out / name).stat().st_size > 0
    run = out / "cycle_lambda-10.0_max_steps-2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["device"] == "cpu"
    assert json.loads((run / "config.json").read_text())["cycle_lambda"] == 10.0
    assert (run / "monet_cyclegan.ipynb").exists() and (run / "images.zip").exists()
    if importlib.util.find_spec("tensorboard"):  # `tensorboard --logdir <sweep>` shows every run of the grid
        runs = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(out))
        runs.Reload()
        assert {name: [e.step for e in runs.Scalars(name, "loss/cycle_photo")] for name in runs.Runs()} == {
            f"{row['run']}/tensorboard": list(range(1, row["max_steps"] + 1)) for row in rows}

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    messages = []
    sweep.run_sweep(grid, {**TINY, "data_dir": demo}, out, log=messages.append)
    assert "4 already completed, 0 to run" in messages[0]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == stamps
    assert all(json.loads(p.read_text())["attempts"] == 1 for p in out.glob("*/status.json"))

    # A run killed after its first step leaves status "running" and a step-1 checkpoint (the 1-step
    # run's: the same run up to there), marked so that only a resumed run carries the mark over.
    one_step = torch.load(out / "cycle_lambda-10.0_max_steps-1" / "checkpoints" / "latest.pt", weights_only=True)
    one_step["history"][0]["cycle_photo"] = 123.0
    torch.save(one_step, run / "checkpoints" / "latest.pt")
    (run / "metrics.json").unlink()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "running"}))
    sweep.run_sweep(grid, {**TINY, "data_dir": demo}, out, log=lambda *_: None)
    status = json.loads((run / "status.json").read_text())
    assert status["attempts"] == 2 and status["status"] == "completed"
    history = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["history"]
    assert [h["step"] for h in history] == [1, 2] and history[0]["cycle_photo"] == 123.0  # resumed, not redone
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, demo):
    out = tmp_path / "runs"
    # Six photo files pass the up-front count, but five do not decode: that run fails in the notebook.
    broken = make_demo_dataset(tmp_path / "broken", n_photos=6, n_paintings=3, progress=False)
    for photo in sorted((broken / "photo_jpg").iterdir())[1:]:
        photo.write_bytes(b"not a jpeg")
    fixed = {**TINY, "max_steps": 1}
    rows = sweep.run_sweep({"data_dir": [demo, str(broken)]}, fixed, out, log=lambda *_: None)
    assert sorted(r["status"] for r in rows) == ["completed", "failed"]
    failed_run = next(r["run"] for r in rows if r["status"] == "failed")
    failed = json.loads((out / failed_run / "status.json").read_text())
    assert "fewer than batch_size=2" in failed["error"]
    assert (out / failed_run / "monet_cyclegan.ipynb").exists()
    assert "failed" in (out / "summary.md").read_text()
    assert sweep.main(["--grid", f"data_dir={demo},{broken}", "--set", *[f"{k}={v}" for k, v in fixed.items()],
                       "--out", str(out)]) == 1


def test_summary_sorts_by_mifid_when_every_run_has_it(tmp_path):
    runs = []
    for name, mifid, cycle in (("a", 90.0, 1.0), ("b", 60.0, 2.0), ("c", None, 0.5)):
        run = tmp_path / name
        run.mkdir()
        (run / "status.json").write_text(json.dumps({"status": "completed", "wall_seconds": 1.0}))
        losses = {k: 0.1 for k in sweep.LOSS_NAMES} | {"cycle_photo": cycle, "cycle_monet": 0.0}
        metrics = {"steps": 1, "device": "cpu", "seconds_per_step": 1.0, "final": losses, "mean": losses}
        best = {"best_evaluation": {"step": 1, "fid": 2 * mifid}} if mifid else {}  # evaluations during training
        (run / "metrics.json").write_text(json.dumps(metrics | ({"mifid": mifid} if mifid else {}) | best))
        runs.append((name, {"epochs": 1}))
    assert [r["run"] for r in sweep.summarize(tmp_path, runs[:2], ["epochs"])] == ["b", "a"]  # by MiFID
    assert [r["run"] for r in sweep.summarize(tmp_path, runs, ["epochs"], sort_by="best_fid")] == ["b", "a", "c"]
    assert "| mifid | best_fid |" in (tmp_path / "summary.md").read_text()
    assert [r["run"] for r in sweep.summarize(tmp_path, runs, ["epochs"])] == ["c", "a", "b"]  # one lacks it
    assert "sorted by final_cycle" in (tmp_path / "summary.md").read_text()


def test_a_sweep_over_the_model_summarises_and_plots_cut_runs_beside_cyclegan_ones(tmp_path, tiny_config, monkeypatch):
    for name, model, names in (("a", "cyclegan", sweep.cyclegan.LOSS_NAMES), ("b", "cut", sweep.cut.LOSS_NAMES)):
        config = tiny_config.replace(model=model, n_res_blocks=5, output_dir=str(tmp_path / name), max_steps=2)
        trainer = CycleGANTrainer(config)
        trainer.fit(BatchesOf(2), progress=False)
        (tmp_path / name / "status.json").write_text(json.dumps({"status": "completed", "wall_seconds": 1.0}))
        (tmp_path / name / "metrics.json").write_text(json.dumps(trainer.metrics()))
        assert set(trainer.metrics()["final"]) <= set(names)
    figures = {}
    monkeypatch.setattr(sweep, "save_figure", lambda fig, path: figures.setdefault(path.name, fig))
    rows = sweep.summarize(tmp_path, [("a", {"model": "cyclegan"}), ("b", {"model": "cut"})], ["model"])
    assert [(r["run"], r["final_cycle"] is None) for r in rows] == [("a", False), ("b", True)]
    table = (tmp_path / "summary.md").read_text()
    assert "final_NCE" in table and "final_D_monet" in table
    ax_g, ax_d = figures["loss_comparison.png"].axes
    assert [line.get_label() for line in ax_g.lines] == ["a", "b (NCE)"]
    assert [line.get_label() for line in ax_d.lines] == ["a", "b (D)"]


def test_a_summary_that_fails_to_write_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    run = tmp_path / "a"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "completed", "wall_seconds": 1.0}))
    losses = {k: 0.1 for k in sweep.LOSS_NAMES}
    (run / "metrics.json").write_text(json.dumps({"steps": 1, "device": "cpu", "seconds_per_step": 1.0,
                                                  "final": losses, "mean": losses}))
    sweep.summarize(tmp_path, [("a", {"epochs": 1})], ["epochs"])
    before = {name: (tmp_path / name).read_text() for name in ("summary.csv", "summary.md")}

    def fails_after_the_header(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", fails_after_the_header)
    with pytest.raises(OSError):
        sweep.summarize(tmp_path, [("a", {"epochs": 2})], ["epochs"])
    assert {name: (tmp_path / name).read_text() for name in ("summary.csv", "summary.md")} == before
    assert not list(tmp_path.glob("*.tmp"))
