"""`python -m monet_utils`: every command on one line of --help, and run/train taking the same flags."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from monet_utils import runner
from monet_utils.__main__ import main
from monet_utils.checkpoints import read_checkpoint
from monet_utils.config import CycleGANConfig

COMMANDS = ("run", "train", "stylize", "export", "demo-data")


def test_help_lists_every_command_on_one_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # what a terminal gives when it says nothing
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {m[1]: m[2] for line in lines if (m := re.match(r"^    (\S+)\s{2,}(\S.*)$", line))}
    assert set(listed) == set(COMMANDS)
    following = lines[lines.index(next(l for l in lines if l.startswith("    run "))) + 1:]
    assert not any(re.match(r"^\s{20,}\S", line) for line in following), "a help line wrapped"


def test_every_command_says_what_it_does_and_every_option_what_it_is():
    from monet_utils.__main__ import build_parser
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(commands) == set(COMMANDS)
    for name, command in commands.items():
        assert len(command.description or "") > 60, name
        for option in command._actions:
            assert option.help, f"{name} {option.option_strings}"
            if option.default not in (None, [], "==SUPPRESS==") and not option.required:
                assert "default" in option.help, f"{name} {option.option_strings}: its default is not said"


def test_run_help_says_what_p_takes_where_the_data_comes_from_and_how_to_resume(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "any field of monet_utils/config.py" in text and "n_samples" in text
    assert "synthetic demo data" in text
    assert "resumes from its checkpoints/latest.pt" in text


@pytest.mark.parametrize("command", ["run", "train"])
def test_run_and_train_take_the_same_flags(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    flags = set(re.findall(r"(--[a-z-]+|-p)\b", capsys.readouterr().out))
    assert {"--config", "--data-dir", "--output-dir", "-p", "--parameter"} <= flags


def test_run_takes_a_runs_config_file_and_p_over_it(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "run_notebook", lambda parameters, output_dir, echo=None: seen.update(
        parameters, output_dir=str(output_dir)) or tmp_path / "x.ipynb")
    data = tmp_path / "data"
    from .conftest import write_images
    write_images(data / "photo_jpg", 4)
    write_images(data / "monet_jpg", 2)
    config = tmp_path / "config.json"
    CycleGANConfig(epochs=7, cycle_lambda=5.0, data_dir=str(data), output_dir=str(tmp_path / "run")).save(config)
    assert main(["run", "--config", str(config), "-p", "epochs", "3"]) == 0
    assert (seen["epochs"], seen["cycle_lambda"], seen["data_dir"]) == (3, 5.0, str(data.resolve()))
    assert seen["output_dir"] == str(tmp_path / "run")


def test_run_passes_a_config_value_the_parameters_cell_does_not_list(tmp_path, monkeypatch):
    """The notebook reads every config field (CycleGANConfig.from_notebook): a run's config.json is
    applied whole, not only the knobs its parameters cell shows."""
    seen = {}
    monkeypatch.setattr(runner, "run_notebook", lambda parameters, output_dir, echo=None: seen.update(parameters)
                        or tmp_path / "x.ipynb")
    from .conftest import write_images
    write_images(tmp_path / "data" / "photo_jpg", 4)
    write_images(tmp_path / "data" / "monet_jpg", 2)
    config = tmp_path / "config.json"
    CycleGANConfig(pool_size=10, data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "run")).save(config)
    assert "pool_size" not in runner.notebook_parameters()
    assert main(["run", "--config", str(config), "-p", "beta1", "0.6"]) == 0
    assert (seen["pool_size"], seen["beta1"]) == (10, 0.6)


@pytest.mark.parametrize("command", ["run", "train"])
def test_ctrl_c_with_the_output_piped_to_a_reader_it_also_ends_still_checkpoints(command, dataset_dir, tmp_path):
    """`make demo 2>&1 | tee run.log`, then Ctrl-C: tee dies with the same signal. Writing to the pipe
    then raised BrokenPipeError: the runner died (exit 1), papermill shut the kernel down mid-step
    (SIGKILL 5 s later, before a slow step could end), and the stop had no checkpoint and no message."""
    out = tmp_path / "out"
    arguments = [command, "--data-dir", str(dataset_dir), "--output-dir", str(out), "-p", "epochs", "100000",
                 "-p", "checkpoint_every", "1000000", "-p", "checkpoint_minutes", "0", "-p", "image_size", "32",
                 "-p", "ngf", "4", "-p", "ndf", "4", "-p", "n_res_blocks", "1", "-p", "batch_size", "2",
                 "-p", "num_workers", "0"] + (["-p", "estimate_mifid", "False"] if command == "run" else [])
    reader, writer = os.pipe()
    run = subprocess.Popen([sys.executable, "-m", "monet_utils", *arguments], cwd=runner.REPO_ROOT, stdout=writer,
                           stderr=writer, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(writer)
    seen = b""
    with os.fdopen(reader, "rb") as pipe:
        while b"training:" not in seen:
            chunk = pipe.read1(4096)
            assert chunk, seen.decode()
            seen += chunk
        time.sleep(2)
    # The reader is gone (tee, ended by the same Ctrl-C); then the Ctrl-C itself.
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(timeout=120) == 130
    assert read_checkpoint(out / "checkpoints" / "latest.pt")["step"] > 0  # the stop's: none was due otherwise
