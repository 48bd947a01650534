"""`python -m monet_utils train -p gpus N`: torchrun started for the user, stopped as one run is.

Two CPU processes (gloo) on a tiny model: what is checked is how the processes start and end."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from monet_utils.__main__ import main
from monet_utils.checkpoints import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = dict(image_size=32, ngf=4, ndf=4, n_res_blocks=1, num_workers=0, amp="off", epochs=100_000)


def parameters(**values):
    return [arg for name, value in {**TINY, **values}.items() for arg in ("-p", name, str(value))]


def start(command, tmp_path, sigint_ignored=False):
    """In a session of its own, as a terminal starts a command; output to files, read at the end.
    `sigint_ignored`: as `command &` in a script or a CI runner starts it, SIGINT ignored from the
    start, so Python installs no KeyboardInterrupt handler of its own."""
    log = open(tmp_path / "output.txt", "w")
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=ignore)


def start_train(data, out, tmp_path, sigint_ignored=False, **values):
    command = [sys.executable, "-m", "monet_utils", "train", "--data-dir", str(data), "--output-dir", str(out),
               *parameters(gpus=2, device="cpu", **values)]
    return start(command, tmp_path, sigint_ignored)


def wait_for_step(checkpoint: Path, step: int, run, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, "the run ended before training"
        try:
            if read_checkpoint(checkpoint)["step"] >= step:
                return
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint past step {step} in {timeout} s")


@pytest.fixture(scope="module")
def long_epochs(tmp_path_factory) -> Path:
    """1,200 photos: 600 steps an epoch at batch 2, a minute or more here, so with no checkpoint due
    by step or time, a checkpoint can only come from stopping."""
    from .conftest import write_images
    root = tmp_path_factory.mktemp("long")
    write_images(root / "photo_jpg", 1200, size=(32, 32), seed=1, prefix="photo")
    write_images(root / "monet_jpg", 4, size=(32, 32), seed=2, prefix="monet")
    return root


NO_CHECKPOINT_DUE = dict(batch_size=2, checkpoint_every=100_000, checkpoint_minutes=0)


def wait_for_training(run, tmp_path, timeout=120) -> None:
    """Until the progress bar has started, then a few seconds of steps."""
    deadline = time.monotonic() + timeout
    while "training:" not in (tmp_path / "output.txt").read_text():
        assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "output.txt").read_text()
        time.sleep(0.1)
    time.sleep(4)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_until_gone(pids, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for pid in left:  # leave nothing behind, whatever the test says
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running {timeout} s later: {left}"


def workers_of(launcher: int, expected: int = 2, timeout=60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(launcher)
        if len(found) >= expected:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{launcher} started {children(launcher)}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_every_process_with_one_line_and_exit_130(dataset_dir, tmp_path, signum):
    """SIGINT to the whole process group, as Ctrl-C in a terminal; SIGTERM to the command alone, as
    `kill`. Torchrun runs in a session of its own and gets the signal once, from the command.
    The SIGINT case starts with SIGINT ignored, as a CI runner started it once: the command's own
    handler must still take it (it timed out here when the command relied on Python's)."""
    out = tmp_path / "out"
    run = start_train(dataset_dir, out, tmp_path, sigint_ignored=signum == signal.SIGINT)
    checkpoint = out / "checkpoints" / "latest.pt"
    wait_for_step(checkpoint, 2, run)
    torchrun = children(run.pid)
    workers = [w for t in torchrun for w in children(t)]
    assert len(torchrun) == 1 and len(workers) == 2
    if signum == signal.SIGINT:
        os.killpg(run.pid, signum)
    else:
        os.kill(run.pid, signum)
    try:
        returncode = run.wait(timeout=120)
    except subprocess.TimeoutExpired:  # seen once in a full CI run: keep what it printed for the next look
        os.killpg(run.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after {signal.Signals(signum).name}; its output ends:\n"
                    + (tmp_path / "output.txt").read_text()[-3000:])
    assert returncode == 130
    output = (tmp_path / "output.txt").read_text()
    name = signal.Signals(signum).name
    last = output.strip().splitlines()[-1]
    assert re.fullmatch(rf"stopped by {name}: checkpoint .*latest.pt \(step (\d+)\) is kept; run the same "
                        r"command again to resume", last), output[-3000:]
    assert int(re.search(r"step (\d+)", last).group(1)) == read_checkpoint(checkpoint)["step"]
    for noise in ("Traceback", "SignalException", "death signal", "closing signal", "ChildFailedError"):
        assert noise not in output, output[-3000:]
    assert output.count("training stops after this step") == 1  # rank 0 says it, once
    wait_until_gone(torchrun + workers, timeout=10)


def test_workers_stop_with_a_checkpoint_when_their_torchrun_is_killed(long_epochs, tmp_path):
    """The issue's case: `kill -9 -- -<torchrun pid>` ends torchrun's process group; the workers,
    in sessions of their own, used to train on without it."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "monet_utils", "train", "--data-dir", str(long_epochs), "--output-dir", str(out),
               *parameters(device="cpu", **NO_CHECKPOINT_DUE)]
    run = start(command, tmp_path)
    wait_for_training(run, tmp_path)
    workers = workers_of(run.pid)
    assert not (out / "checkpoints" / "latest.pt").exists()
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    wait_until_gone(workers)
    state = read_checkpoint(out / "checkpoints" / "latest.pt")  # written on the way out, by both
    assert 0 < state["step"] < 600 and len(state["pools"]) == 2


def test_killing_the_command_stops_torchrun_and_its_workers_with_a_checkpoint(long_epochs, tmp_path):
    """`kill -9` of `python -m monet_utils train` (or of a notebook kernel): its torchrun child,
    in a session of its own, sees its parent gone and stops the workers, whose output has lost
    its reader (printing to it would end them mid-step)."""
    out = tmp_path / "out"
    run = start_train(long_epochs, out, tmp_path, **NO_CHECKPOINT_DUE)
    wait_for_training(run, tmp_path)
    torchrun = children(run.pid)
    workers = [w for t in torchrun for w in children(t)]
    assert len(torchrun) == 1 and len(workers) == 2
    assert not (out / "checkpoints" / "latest.pt").exists()
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    wait_until_gone(torchrun + workers)
    assert 0 < read_checkpoint(out / "checkpoints" / "latest.pt")["step"] < 600


class SlowFeatures(torch.nn.Module):
    """An FID network that takes seconds a batch (2 features an image): a stop lands in an evaluation."""

    def __init__(self, rounds: int):
        super().__init__()
        self.rounds = rounds

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        work = torch.ones(256, 256)
        for _ in range(self.rounds):
            work = work @ work / 256
        return images.float().flatten(1)[:, :2] + work[0, 0]


def test_a_stop_during_an_evaluation_ends_in_a_checkpoint_and_exit_130(dataset_dir, tmp_path):
    """Ctrl-C to `python -m monet_utils.torchrun`, the drop-in for a bare torchrun (whose own stop
    ends in its traceback and exit 1), while process 0 evaluates and process 1 waits for it.
    torchrun's grace for the workers, here 1 s (TORCH_ELASTIC_SHUTDOWN_TIMEOUT; torch 2.10 reads no
    such setting and gives 30 s), used to end them mid-evaluation, the stop's checkpoint lost."""
    network = tmp_path / "slow.pt"
    rounds = 1
    while True:  # about 2 s a batch on this machine
        started = time.perf_counter()
        SlowFeatures(rounds)(torch.zeros(1, 3, 8, 8))
        if time.perf_counter() - started > 0.3:
            break
        rounds *= 2
    torch.jit.save(torch.jit.script(SlowFeatures(rounds * 6)), str(network))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monet_utils.torchrun", "--standalone", "--nproc_per_node=2", "-m",
               "monet_utils", "train", "--data-dir", str(dataset_dir), "--output-dir", str(out),
               *parameters(device="cpu", batch_size=2, eval_every=1, eval_photos=2, fid_weights=network,
                           checkpoint_every=100_000, checkpoint_minutes=0, tensorboard_every=0)]
    log = open(tmp_path / "output.txt", "w")
    run = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "1"})
    deadline = time.monotonic() + 180
    while "Evaluation at step 3:" not in (tmp_path / "output.txt").read_text():  # the first: 3 steps an epoch
        assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "output.txt").read_text()
        time.sleep(0.1)
    time.sleep(1)  # three steps take milliseconds: the second evaluation has begun
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(timeout=120) == 130
    output = (tmp_path / "output.txt").read_text()
    assert "Evaluation at step 6:" in output  # the evaluation under way was finished
    stopped = re.search(r"SIGINT: training stopped after step (\d+); checkpoint \S+latest.pt holds it", output)
    assert stopped and read_checkpoint(out / "checkpoints" / "latest.pt")["step"] == int(stopped.group(1)) == 7, output
    assert "Traceback" not in output and "SignalException" not in output


def test_the_notebooks_trainer_moves_every_weight_it_holds_off_the_device_while_workers_train(tiny_config,
                                                                                              monkeypatch):
    from monet_utils.launch import off_the_device
    from monet_utils.training import CycleGANTrainer
    trainer = CycleGANTrainer(tiny_config)
    moved = []
    to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: moved.append((self, args[:1]))
                        or to(self, *args, **kwargs))
    with off_the_device(trainer):
        away = {id(module) for module, args in moved if args == ("cpu",)}
    held = trainer.model.networks.values()
    assert len(held) == 4 and all(id(module) in away for module in held)
    back = {id(module) for module, args in moved if args == (trainer.device,)}
    assert all(id(module) in back for module in held)


def test_workers_count_the_minutes_their_notebook_spent_before_training(tiny_config, monkeypatch):
    """time_budget_hours counts from the kernel's start: torchrun's workers, started later, get it."""
    import io
    from monet_utils import launch
    from monet_utils.time_budget import SESSION_STARTED_ENV, session_started
    monkeypatch.delenv(SESSION_STARTED_ENV, raising=False)
    started = []

    class Finished:
        def __init__(self, command, env, **kwargs):
            started.append(env)
            self.stdout, self.returncode = io.StringIO(""), 0

        def wait(self):
            return 0

    monkeypatch.setattr(launch.subprocess, "Popen", Finished)
    launch.launch_workers(tiny_config, 2)
    assert float(started[0][SESSION_STARTED_ENV]) == pytest.approx(session_started(), abs=0.05)


def test_gpus_without_gpus_is_refused_and_says_how_to_get_cpu_processes(dataset_dir, tmp_path, capsys, monkeypatch):
    """It used to train one process and exit 0."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert main(["train", "--data-dir", str(dataset_dir), "--output-dir", str(tmp_path / "out"),
                 *parameters(gpus=4, epochs=1)]) == 2
    err = capsys.readouterr().err
    assert "'gpus' is 4 but torch sees no CUDA device; set device='cpu' to train with 4 CPU processes" in err
    assert not (tmp_path / "out").exists()


def test_train_takes_the_same_flags_as_run_and_trains_in_process(dataset_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--data-dir", str(dataset_dir), "--output-dir", str(out),
                 *parameters(device="cpu", epochs=1, max_steps=2, batch_size=2)]) == 0
    assert read_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 2
    assert (out / "metrics.json").exists()


def test_a_worker_error_reaches_the_user_as_one_line(dataset_dir, tmp_path, capsys):
    missing = tmp_path / "elsewhere.pt"
    assert main(["train", "--data-dir", str(dataset_dir), "--output-dir", str(tmp_path / "out"),
                 *parameters(gpus=2, device="cpu", resume_from=missing)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: resume_from checkpoint {missing} does not exist", err
    assert "Traceback" not in err and "ChildFailedError" not in err


@pytest.mark.parametrize("worker", [True, False])
def test_a_torchrun_worker_exits_with_its_code_and_output_but_without_the_interpreters_teardown(worker):
    """Torch's threads sometimes abort a worker's teardown after destroy_process_group, and
    torchrun then calls a run that trained and saved a failure: workers skip the teardown."""
    program = ("import atexit\n"
               "from monet_utils.launch import exit_process\n"
               "atexit.register(lambda: print(' teardown', end=''))\n"
               "print('trained and saved', end='')\n"  # no newline: still in the buffer at exit
               "exit_process(3)\n")
    # A bare torchrun's worker: its output buffered, as without our launcher's PYTHONUNBUFFERED.
    env = {name: value for name, value in os.environ.items()
           if name not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PYTHONUNBUFFERED")}
    if worker:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout == ("trained and saved" if worker else "trained and saved teardown")
