"""The primary notebook, executed by papermill with tiny parameters, and the runner around it."""
import ast
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import nbformat
import pytest
import torch

from monet_utils import runner
from monet_utils.__main__ import main
from monet_utils.checkpoints import CheckpointError, read_checkpoint
from monet_utils.config import ConfigError, CycleGANConfig
from monet_utils.demo_data import make_demo_dataset
from monet_utils.kaggle_notebook import KAGGLE_NOTEBOOK
from monet_utils.submission import check_submission_zip
from monet_utils.training import CycleGANTrainer

TINY = dict(image_size=32, ngf=4, ndf=4, n_res_blocks=1, batch_size=2, max_steps=3, num_workers=0, n_samples=2)


def test_exactly_one_parameters_cell_whose_defaults_are_the_config_defaults():
    notebook = nbformat.read(runner.NOTEBOOK, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    defaults = {name: ast.literal_eval(value) for name, value in runner.notebook_parameters().items()}
    config_defaults = CycleGANConfig().to_dict()
    shared = set(defaults) & set(config_defaults)
    assert {"epochs", "cycle_lambda", "batch_size", "image_size", "data_dir", "output_dir"} <= shared
    assert {k: defaults[k] for k in shared} == {k: config_defaults[k] for k in shared}


def test_the_notebook_builds_its_config_from_its_variables_and_no_later_cell_reuses_their_names():
    """No hand-written list of config arguments to keep in step (a knob the list missed was silently
    ignored); a later cell that rebinds a config field's name (`generator`) would feed a re-run of
    the config cell a network for a knob."""
    notebook = nbformat.read(runner.NOTEBOOK, as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    calls = [node for source in code for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", None) == "CycleGANConfig"]
    assert [ast.unparse(call) for call in calls] == ["CycleGANConfig.from_notebook(globals())"]
    later = code[1:]  # after the parameters cell
    rebound = {node.id for source in later for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    assert rebound & set(CycleGANConfig.__dataclass_fields__) == set()


def test_from_notebook_takes_every_field_the_namespace_sets_and_defaults_the_rest():
    namespace = {"epochs": 3, "gan_mode": "bce", "pool_size": 7, "photos": [1, 2], "out": "x"}
    config = CycleGANConfig.from_notebook(namespace)
    assert (config.epochs, config.gan_mode, config.pool_size) == (3, "bce", 7)
    assert config.replace(epochs=1, gan_mode="lsgan", pool_size=50) == CycleGANConfig()


def test_notebook_cells_are_short_calls_into_the_package():
    notebook = nbformat.read(runner.NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While)) for n in ast.walk(tree))


def test_papermill_run_writes_every_output(tmp_path, dataset_dir, caplog):
    """On a real-looking dataset (not the demo) too small for the competition: the zip is reported
    not competition-valid and the run goes on to the estimate."""
    out = tmp_path / "run"
    not_in_the_cell = {"gan_mode": "bce", "pool_size": 3}  # config fields -p reaches all the same
    assert not set(not_in_the_cell) & set(runner.notebook_parameters())
    with caplog.at_level(logging.WARNING, logger="papermill"):
        executed = runner.run_notebook({**TINY, **not_in_the_cell, "data_dir": str(dataset_dir)}, out)
    assert "unknown parameter" not in caplog.text
    assert executed == out / "monet_cyclegan.ipynb"
    for name in ("losses.png", "samples.png", "augmentations.png", "config.json", "checkpoints/latest.pt", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    assert check_submission_zip(out / "images.zip", competition=False).n_images == 6
    assert json.loads((out / "config.json").read_text()) == CycleGANConfig(**{
        **{k: v for k, v in TINY.items() if k != "n_samples"}, **not_in_the_cell, "data_dir": str(dataset_dir),
        "output_dir": str(out)}).to_dict()
    outputs = "".join(str(o) for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", []))
    assert "3 steps" in outputs and "image/png" in outputs
    assert "not competition-valid" in outputs and ("MiFID " in outputs or "MiFID estimate skipped" in outputs)


def test_bad_parameters_stop_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="cycle_lamda"):
        runner.run_notebook({"cycle_lamda": 5}, tmp_path / "a")
    with pytest.raises(ConfigError, match="multiple of 4"):
        runner.run_notebook({"image_size": 30}, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("name, value, message", [
    ("batch_size", 1_000_000_000, r"6 image photo\(s\), fewer than batch_size=1000000000; batch_size must be at most 6"),
    ("image_size", 100_000, "'image_size' must be from 32 to 1024, got 100000"),
    ("holdout_paintings", 3, "holdout_paintings=3 leaves none of the 3 image paintings .* must be at most 2"),
])
def test_values_beyond_the_data_or_the_size_limit_stop_before_anything_is_written(tmp_path, dataset_dir, capsys,
                                                                                name, value, message):
    out = tmp_path / "out"
    assert main(["run", "--data-dir", str(dataset_dir), "--output-dir", str(out), "-p", name, str(value)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "train"])
@pytest.mark.parametrize("content", [None, "not a network"], ids=["missing", "a-text-file"])
def test_a_bad_fid_weights_stops_before_anything_is_written(tmp_path, dataset_dir, capsys, command, content):
    """It used to fail in a later cell (run), or at the first evaluation with no checkpoint (train)."""
    weights, out = tmp_path / "inception.pt", tmp_path / "out"
    if content:
        weights.write_text(content)
    arguments = [command, "--data-dir", str(dataset_dir), "--output-dir", str(out), "-p", "eval_every", "1",
                 "-p", "fid_weights", str(weights)] + [arg for name, value in TINY.items() if name != "n_samples"
                                                       for arg in ("-p", name, str(value))]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config 'fid_weights': ") and str(weights) in err and err.count("\n") == 1, err
    assert not out.exists()


def test_one_held_out_painting_is_refused_before_anything_is_written(tmp_path, dataset_dir, capsys):
    """An FID needs two images a side: with evaluation on, it used to fail after 20 steps, with no checkpoint."""
    out = tmp_path / "out"
    assert main(["run", "--data-dir", str(dataset_dir), "--output-dir", str(out), "-p", "holdout_paintings", "1",
                 "-p", "eval_every", "1"]) == 2
    assert "'holdout_paintings' must be 0 or at least 2" in capsys.readouterr().err
    assert not out.exists()


def test_cli_reports_bad_parameters_with_exit_code_2(tmp_path, capsys):
    assert main(["run", "--output-dir", str(tmp_path), "-p", "lr", "-1"]) == 2
    assert "'lr'" in capsys.readouterr().err


def test_main_job_falls_back_to_demo_data_with_cpu_parameters(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.setattr(runner, "find_data_dir", lambda data_dir=None: (_ for _ in ()).throw(runner.DataError("none")))
    made = []
    monkeypatch.setattr(runner, "make_demo_dataset", lambda root: made.append(root) or root)
    seen = {}
    monkeypatch.setattr(runner, "run_notebook", lambda parameters, output_dir, echo=None: seen.update(parameters))
    runner.run_main_job(output_dir=tmp_path, overrides={"epochs": 2})
    assert made and seen["data_dir"] == str(made[0].resolve())
    assert seen["image_size"] == runner.DEMO_PARAMETERS["image_size"] and seen["epochs"] == 2


def test_a_failing_cell_is_reported_with_the_partial_notebook(tmp_path, capsys):
    # An empty photo folder passes parameter checks but fails in the notebook's data cell.
    (tmp_path / "data" / "photo_jpg").mkdir(parents=True)
    assert main(["run", "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "photo_jpg/ holds no images" in err
    # find_data_dir raised in the runner, before papermill; now make the notebook itself fail: two
    # photo files pass the runner's count, one of them does not decode.
    demo = make_demo_dataset(tmp_path / "demo", n_photos=2, n_paintings=1)
    sorted((demo / "photo_jpg").iterdir())[0].write_bytes(b"not a jpeg")
    with pytest.raises(runner.NotebookRunError, match=r"failed in cell \[\d+\]: DataError: .*fewer than batch_size") as info:
        runner.run_notebook({**TINY, "data_dir": str(demo)}, tmp_path / "out2")
    assert info.value.executed.exists()


def test_a_device_this_machine_lacks_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'amp' is 'fp16', which needs a CUDA device"):
        runner.run_notebook({"amp": "fp16"}, tmp_path / "a")
    with pytest.raises(ConfigError, match="'device' is 'cuda' but torch sees no CUDA device"):
        runner.run_notebook({"device": "cuda"}, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resuming_another_architecture_is_refused_before_anything_is_written(tmp_path, tiny_config, dataset_dir):
    out = tmp_path / "run"
    CycleGANTrainer(tiny_config.replace(output_dir=str(out))).save()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="another architecture .*ngf: checkpoint 4 vs config 8"):
        runner.run_notebook({**TINY, "ngf": 8, "data_dir": str(dataset_dir)}, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # config.json untouched
    assert not (out / "monet_cyclegan.ipynb").exists()


def test_a_wrong_resume_from_is_refused_before_anything_is_written(tmp_path, tiny_config, dataset_dir):
    missing = tmp_path / "previous" / "latest.pt"
    with pytest.raises(CheckpointError, match="resume_from checkpoint .*previous/latest.pt does not exist"):
        runner.run_notebook({**TINY, "resume_from": str(missing), "data_dir": str(dataset_dir)}, tmp_path / "a")
    previous = CycleGANTrainer(tiny_config.replace(output_dir=str(tmp_path / "previous"))).save()
    with pytest.raises(CheckpointError, match="another architecture .*generator: checkpoint resnet vs config unet"):
        runner.run_notebook({**TINY, "resume_from": str(previous), "generator": "unet", "data_dir": str(dataset_dir)},
                            tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_prints_one_line_for_an_os_error(tmp_path, dataset_dir, capsys):
    (tmp_path / "taken").write_text("a file where the output folder should go")
    assert main(["run", "--data-dir", str(dataset_dir), "--output-dir", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "taken" in err and "Traceback" not in err


def start_run(data, out, max_steps):
    """`python -m monet_utils run` in a session of its own, as a terminal would start it."""
    command = [sys.executable, "-m", "monet_utils", "run", "--data-dir", str(data), "--output-dir", str(out),
               "-p", "max_steps", str(max_steps), "-p", "epochs", "1000", "-p", "estimate_mifid", "False"]
    for name, value in TINY.items():
        if name != "max_steps":
            command += ["-p", name, str(value)]
    return subprocess.Popen(command, cwd=runner.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_with_one_line_and_a_rerun_resumes(tmp_path, dataset_dir, signum):
    """SIGINT goes to the whole process group, as Ctrl-C in a terminal does; SIGTERM to the
    process alone, as `kill` does. Either way training stops after a step with a checkpoint."""
    out = tmp_path / "run"
    run = start_run(dataset_dir, out, max_steps=100_000)
    seen = ""
    while "training:" not in seen:  # the progress bar streams from the kernel as it starts
        line = run.stderr.readline()
        assert line, f"the run ended before training: {seen}"
        seen += line
    time.sleep(2)
    if signum == signal.SIGINT:
        os.killpg(run.pid, signum)
    else:
        os.kill(run.pid, signum)
    stdout, stderr = run.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert run.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"stopped by {name}: checkpoint .*latest.pt \(step (\d+)\) is kept; run the same "
                        r"command again to resume", last), last
    assert "Traceback" not in stderr
    step = read_checkpoint(out / "checkpoints" / "latest.pt")["step"]
    assert step > 0 and f"(step {step})" in last

    rerun = start_run(dataset_dir, out, max_steps=step + 2)
    stdout, stderr = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == step + 2  # resumed, not started over


@pytest.mark.parametrize("notebook", [runner.NOTEBOOK, KAGGLE_NOTEBOOK], ids=["primary", "kaggle"])
def test_papermill_reads_every_line_of_the_parameters_cell(notebook, capsys):
    """papermill's own inspection, which the runner's check uses: a line it cannot parse (a colon in a
    comment reads as a type annotation) makes that parameter unknown to `-p`."""
    cell = next(c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = [target.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for target in node.targets]
    found = runner.notebook_parameters(notebook)
    assert "Unable to parse" not in capsys.readouterr().out
    assert sorted(found) == sorted(assigned)
    notebook_only = {"n_samples", "estimate_mifid", "drive_folder"}  # what the notebook does beyond the config
    assert set(found) - notebook_only <= set(CycleGANConfig.__dataclass_fields__)


def tiny_run_command(data, out):
    command = ["run", "--data-dir", str(data), "--output-dir", str(out), "-p", "estimate_mifid", "False"]
    for name, value in TINY.items():
        command += ["-p", name, str(value)]
    return command


def test_a_failed_checkpoint_write_shows_the_notebooks_own_error_on_a_line_of_its_own(tmp_path, dataset_dir, capsys):
    """/dev/full answers writes with ENOSPC, as a full disk does (once here: a failed save removes
    its temporary file, the link)."""
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.pt.tmp").symlink_to("/dev/full")
    assert main(tiny_run_command(dataset_dir, out)) == 2
    err = capsys.readouterr().err.splitlines()
    assert re.match(r"error: monet_cyclegan.ipynb failed in cell \[\d+\]: CheckpointError: could not write checkpoint "
                    rf"{re.escape(str(out))}/checkpoints/latest.pt \(.* MB free on its disk; .*\); no checkpoint was "
                    "written", err[-2]), err[-3:]


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs filled to the last byte (mounting needs root, which CI has)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, bytes(4096)):
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(filler)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_shows_the_notebooks_own_error_naming_the_file(full_disk, dataset_dir, capsys):
    """papermill's own writes of the executed notebook used to replace the cell's error with a bare
    '[Errno 28] No space left on device'."""
    out = full_disk / "out"
    assert main(tiny_run_command(dataset_dir, out)) == 2
    err = capsys.readouterr().err.splitlines()
    first = next(i for i, line in enumerate(err) if line.startswith("error: "))
    assert re.match(r"error: monet_cyclegan.ipynb failed in cell \[\d+\]: WriteError: could not write JSON file "
                    rf"{re.escape(str(out))}/config.json \(0 MB free on its disk; OSError: \[Errno 28\] No space left",
                    err[first]), err[first:]
    assert re.match(rf"The executed notebook could not be written: could not write executed notebook "
                    rf"{re.escape(str(out))}/monet_cyclegan.ipynb \(0 MB free", err[first + 1]), err[first:]
