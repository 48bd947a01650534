"""Data-parallel training with torchrun on the CPU (gloo, two processes)."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import pytest
import torch

from monet_utils import runner

if importlib.util.find_spec("tensorboard"):
    from tensorboard.backend.event_processing import event_accumulator

from monet_utils.checkpoints import read_checkpoint
from monet_utils.config import ConfigError, CycleGANConfig
from monet_utils.launch import process_count
from monet_utils.kaggle_notebook import KAGGLE_NOTEBOOK
from monet_utils.cyclegan import LOSS_NAMES
from monet_utils.training import CycleGANTrainer

REPO = Path(__file__).resolve().parents[1]
TINY = dict(image_size=32, ngf=4, ndf=4, n_res_blocks=1, num_workers=0, device="cpu", amp="off", seed=3)


def torchrun_command(nproc, data, out, **params):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "monet_utils", "train", "-p", "data_dir", str(data), "-p", "output_dir", str(out)]
    for name, value in {**TINY, **params}.items():
        command += ["-p", name, str(value)]
    return command


def torchrun(nproc, data, out, **params):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun_command(nproc, data, out, **params), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return read_checkpoint(out / "checkpoints" / "latest.pt")


def generator_weights(state):
    return torch.cat([v.flatten() for k, v in sorted(state["networks"]["G_photo2monet"].items())])


def biases_before_a_norm(net: torch.nn.Module) -> set[str]:
    """Conv biases that InstanceNorm subtracts right away: their gradient is zero in exact arithmetic,
    so float noise decides its sign, and Adam turns any sign into a step of +-lr."""
    names = set()
    for prefix, module in net.named_modules():
        children = list(module.named_children())
        for (name, layer), (_, following) in zip(children, children[1:]):
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and isinstance(
                    following, (torch.nn.InstanceNorm2d, torch.nn.GroupNorm)):
                names.add(f"{prefix}.{name}.bias".lstrip("."))
    return names


def test_two_processes_of_batch_2_train_like_one_process_of_batch_4(dataset_dir, tmp_path, feature_network):
    """InstanceNorm is per image and DDP averages the gradients: the same maths, up to the order
    of float sums. 6 photos, global batch 4: one step an epoch, 4 epochs with an LR decay, an
    evaluation every 2 epochs (process 0 scores, both save best.pt)."""
    params = dict(batch_size=4, pool_size=0, epochs=4, decay_epochs=2, tensorboard_every=1, eval_every=2,
                  eval_photos=4, fid_weights=feature_network)
    two = torchrun(2, dataset_dir, tmp_path / "two", **params)
    one = torchrun(1, dataset_dir, tmp_path / "one", **params)
    assert two["step"] == one["step"] == 4 and two["epoch"] == 4
    for name in LOSS_NAMES:  # the history holds the global batch's losses, step after step
        assert [h[name] for h in two["history"]] == pytest.approx([h[name] for h in one["history"]], rel=1e-5)
    networks = CycleGANTrainer(CycleGANConfig(**TINY, output_dir=str(tmp_path / "x"))).model.networks
    compared = 0
    for net_name in networks:
        free = biases_before_a_norm(networks[net_name])
        for key, weight in one["networks"][net_name].items():
            if key not in free:
                assert torch.allclose(two["networks"][net_name][key], weight, rtol=0, atol=1e-5), (net_name, key)
                compared += weight.numel()
    assert compared > 0.99 * sum(p.numel() for net in networks.values() for p in net.parameters())
    assert len(two["pools"]) == 2 and len(one["pools"]) == 1
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["processes"] == 2
    assert [e["step"] for e in two["evaluations"]] == [e["step"] for e in one["evaluations"]] == [2, 4]
    assert [e["fid"] for e in two["evaluations"]] == pytest.approx([e["fid"] for e in one["evaluations"]], rel=1e-3)
    assert sorted(p.name for p in (tmp_path / "two" / "samples").iterdir()) == ["step_2.png", "step_4.png"]
    best = [read_checkpoint(tmp_path / run / "checkpoints" / "best.pt")["evaluation"] for run in ("two", "one")]
    assert best[0] == min(two["evaluations"], key=lambda e: e["fid"])  # process 0's choice, as one process makes it
    assert best[0]["step"] == best[1]["step"]
    # TensorBoard: one writer (process 0), every step once, the global batch's losses.
    events = list((tmp_path / "two" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    if importlib.util.find_spec("tensorboard"):
        scalars = event_accumulator.EventAccumulator(str(events[0]))
        scalars.Reload()
        logged = scalars.Scalars("loss/cycle_photo")
        assert [e.step for e in logged] == [h["step"] for h in two["history"]]
        assert [e.value for e in logged] == pytest.approx([h["cycle_photo"] for h in two["history"]], rel=1e-6)


class OutOfMemory(torch.nn.Module):
    """An FID network that loads, then fails when it is used, as an out-of-memory would."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory (a stand-in)")


def test_a_failed_evaluation_under_torchrun_warns_once_and_every_process_trains_on(dataset_dir, tmp_path):
    """Process 0 scores alone while the others wait for its scores: a failure used to end it and
    leave the others waiting in the broadcast."""
    network = tmp_path / "failing.pt"
    torch.jit.save(torch.jit.script(OutOfMemory()), str(network))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun_command(2, dataset_dir, out, batch_size=4, epochs=3, eval_every=1, eval_photos=4,
                                           fid_weights=network), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("Evaluation at step") == 1 and output.count("evaluation is off") == 1, output
    assert ("Evaluation at step 1 failed (RuntimeError: CUDA out of memory (a stand-in)); evaluation is off for the "
            "rest of this run, and training goes on") in output
    state = read_checkpoint(out / "checkpoints" / "latest.pt")
    assert state["step"] == 3 and state["evaluations"] == [] and not (out / "checkpoints" / "best.pt").exists()


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(dataset_dir, tmp_path):
    """Pools on (size 3, one per process, saved with the checkpoint), a checkpoint every step;
    the first run is killed with SIGKILL once a checkpoint past step 2 exists, then re-run."""
    params = dict(batch_size=4, pool_size=3, epochs=30, decay_epochs=10, checkpoint_every=1)
    straight = torchrun(2, dataset_dir, tmp_path / "straight", **params)

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(torchrun_command(2, dataset_dir, out, **params), cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = out / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if checkpoint.exists() and read_checkpoint(checkpoint)["step"] >= 2:
            break
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    killed_at = read_checkpoint(checkpoint)["step"]
    assert 2 <= killed_at < 30, killed_at

    resumed = torchrun(2, dataset_dir, out, **params)
    assert resumed["step"] == straight["step"] == 30
    assert torch.allclose(generator_weights(resumed), generator_weights(straight), rtol=0, atol=1e-6)
    assert [p["monet"]["images"].shape for p in resumed["pools"]] == [p["monet"]["images"].shape
                                                                       for p in straight["pools"]]


def test_a_worker_that_dies_takes_the_others_down_with_its_rank_named(dataset_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(torchrun_command(2, dataset_dir, tmp_path / "out", batch_size=4, epochs=100_000),
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    workers = []
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline:  # torchrun's children are the workers
        time.sleep(0.2)
        workers = [int(p) for p in Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()]
    time.sleep(3)  # let them start training
    os.kill(max(workers), signal.SIGKILL)  # the younger worker: local rank 1
    output, _ = run.communicate(timeout=120)  # no hang: torchrun ends the other worker
    assert run.returncode != 0
    assert "local_rank: 1" in output and "Signal 9 (SIGKILL)" in output, output[-2000:]


def test_a_device_with_an_index_is_one_process_on_it(monkeypatch):
    """A sweep on T4 x2 runs one notebook per GPU with device='cuda:N': each must train on its own
    GPU alone, not start torchrun over both."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert process_count(CycleGANConfig(device="cuda:1")) == 1
    assert process_count(CycleGANConfig(device="cuda:0", gpus=1)) == 1
    with pytest.raises(ConfigError, match="'gpus' is 2 but 'device' is 'cuda:1', one device"):
        process_count(CycleGANConfig(device="cuda:1", gpus=2))


def test_process_count_follows_gpus_and_refuses_what_is_not_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # Kaggle's T4 x2
    assert process_count(CycleGANConfig()) == 2
    assert process_count(CycleGANConfig(gpus=1)) == 1
    with pytest.raises(ConfigError, match="'gpus' is 3 but torch sees 2 CUDA device"):
        process_count(CycleGANConfig(gpus=3))
    with pytest.raises(ConfigError, match="'batch_size' \\(4\\) must divide evenly over 3"):
        process_count(CycleGANConfig(gpus=3, batch_size=4, device="cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert process_count(CycleGANConfig()) == 1  # the CPU: in process
    assert process_count(CycleGANConfig(gpus=2, device="cpu")) == 2
    with pytest.raises(ConfigError, match="set device='cpu'"):
        process_count(CycleGANConfig(gpus=2))
    with pytest.raises(ConfigError, match="'gpus' must be 'auto' or a positive integer"):
        CycleGANConfig(gpus=0)


NOTEBOOK_TINY = dict(image_size=32, ngf=4, ndf=4, n_res_blocks=1, batch_size=4, epochs=3, num_workers=0,
                     n_samples=2, device="cpu", gpus=2, estimate_mifid=False)


def notebook_text(executed):
    return "".join(str(o) for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", []))


def test_the_notebook_trains_with_two_processes_and_goes_on_from_their_checkpoint(dataset_dir, tmp_path):
    out = tmp_path / "run"
    executed = runner.run_notebook({**NOTEBOOK_TINY, "data_dir": str(dataset_dir)}, out)
    text = notebook_text(executed)
    assert "Training with 2 processes (torchrun)" in text and "3 steps" in text
    for name in ("losses.png", "samples.png", "metrics.json", "images.zip", "checkpoints/latest.pt"):
        assert (out / name).stat().st_size > 0, name
    assert len(read_checkpoint(out / "checkpoints" / "latest.pt")["pools"]) == 2
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2  # the workers', not the kernel's 1


def test_the_kaggle_notebook_launches_workers_from_its_inlined_package(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel writes the inlined package here
    work = tmp_path / "working"
    work.mkdir()
    executed = work / "executed.ipynb"
    papermill.execute_notebook(str(KAGGLE_NOTEBOOK), str(executed), cwd=str(work), progress_bar=False,
                               kernel_name="python3",
                               parameters={**NOTEBOOK_TINY, "data_dir": str(dataset_dir), "output_dir": str(work)})
    assert "Training with 2 processes (torchrun)" in notebook_text(executed)
    assert (work / "images.zip").exists() and len(read_checkpoint(work / "checkpoints" / "latest.pt")["pools"]) == 2


def test_gpus_beyond_the_visible_devices_stop_the_run_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="set device='cpu'"):
        runner.run_notebook({"gpus": 2}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_cut_in_two_processes_of_batch_2_trains_like_one_process_of_batch_4(dataset_dir, tmp_path, model):
    """Every process draws the same patch positions and flips (the model's own generator of
    draws), so DDP's averaged gradients are the one-process step's here too."""
    params = dict(model=model, n_res_blocks=5, batch_size=4, epochs=2)
    two = torchrun(2, dataset_dir, tmp_path / "two", **params)
    one = torchrun(1, dataset_dir, tmp_path / "one", **params)
    assert two["step"] == one["step"] == 2
    for name in ("G_GAN", "NCE", "D"):
        assert [h[name] for h in two["history"]] == pytest.approx([h[name] for h in one["history"]], rel=1e-5)
    networks = CycleGANTrainer(CycleGANConfig(**{**TINY, **params}, output_dir=str(tmp_path / "x"))).model.networks
    for net_name, net in networks.items():
        free = biases_before_a_norm(net)
        for key, weight in one["networks"][net_name].items():
            if key not in free:  # PatchNCE's temperature (0.07) magnifies the float noise: half an Adam step
                assert torch.allclose(two["networks"][net_name][key], weight, rtol=0, atol=1e-4), (net_name, key)
