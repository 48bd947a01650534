"""What only a GPU can show: each test runs where CUDA is present and skips elsewhere (CI has none).

    .venv/bin/python -m pytest -m gpu        # on a GPU machine; benchmarks/gpu_check.py runs these too

Tolerances: convolutions run in TF32 on Ampere and newer unless told otherwise, and fp16/bf16
round far more, so results are compared with the fp32 CPU/GPU result as stated per test.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monet_utils.checkpoints import load_generator, read_checkpoint
from monet_utils.config import CycleGANConfig
from monet_utils.data import InMemoryLoader, build_dataset
from monet_utils.launch import off_the_device
from monet_utils.training import CycleGANTrainer

from .test_training import fixed_batch, weights

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_config(tmp_path) -> CycleGANConfig:
    return CycleGANConfig(image_size=64, ngf=8, ndf=8, n_res_blocks=2, batch_size=2, num_workers=0, pool_size=3,
                          device="cuda", amp="off", compile="off", fused_adam="off", channels_last="off",
                          output_dir=str(tmp_path / "out"))


def one_step(config, scaler_scale=None):
    """The losses of one step on a fixed batch and every weight after it."""
    trainer = CycleGANTrainer(config)
    if scaler_scale:  # a moderate first scale: the default 65536 may skip the first fp16 step on overflow
        trainer.model.scaler = torch.amp.GradScaler("cuda", init_scale=scaler_scale)
    before = weights(trainer)
    losses = trainer.model.train_step(*fixed_batch(size=config.image_size))
    return losses, before, weights(trainer)


MODELS = {"cyclegan": {}, "cut": dict(model="cut", n_res_blocks=5), "fastcut": dict(model="fastcut", n_res_blocks=5)}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("amp, loss_rel", [("fp16", 2e-2), ("bf16", 5e-2)])
def test_a_half_precision_step_matches_the_fp32_step(gpu_config, amp, loss_rel, model):
    """Adam's first update is about lr x sign(gradient): a weight whose gradient sign flips under
    rounding moves by 2 lr at most; nearly all move exactly as in fp32."""
    gpu_config = gpu_config.replace(**MODELS[model])
    expected, before, expected_after = one_step(gpu_config)
    losses, _, after = one_step(gpu_config.replace(amp=amp), scaler_scale=1024.0 if amp == "fp16" else None)
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value, rel=loss_rel, abs=1e-3), name
    moved = torch.cat([(after[k] - before[k]).flatten().float() for k in before])
    expected_moved = torch.cat([(expected_after[k] - before[k]).flatten().float() for k in before])
    assert moved.abs().max() <= 2 * gpu_config.lr * 1.01  # the step was taken, and no further than Adam goes
    assert (moved - expected_moved).abs().max() <= 2 * gpu_config.lr * 1.01
    assert ((moved - expected_moved).abs() < gpu_config.lr / 10).float().mean() > 0.9


@pytest.mark.parametrize("model", MODELS)
def test_torch_compile_compiles_and_gives_the_eager_result(gpu_config, capsys, model):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    gpu_config = gpu_config.replace(**MODELS[model])
    expected, _, _ = one_step(gpu_config)
    losses, _, _ = one_step(gpu_config.replace(compile="on"))
    assert counters["stats"]["unique_graphs"] >= (4 if model == "cyclegan" else 3)
    assert "torch.compile" not in capsys.readouterr().err  # no network fell back to eager
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value, rel=1e-2, abs=1e-4), name


def test_the_in_memory_data_path_on_the_gpu_equals_the_cpu_one(gpu_config, dataset_dir):
    config = gpu_config.replace(image_size=32)
    dataset = build_dataset(config, dataset_dir)
    on_gpu, on_cpu = InMemoryLoader(dataset, config, "cuda"), InMemoryLoader(dataset, config, "cpu")
    for loader in (on_gpu, on_cpu):
        loader.set_epoch(1)
    for (gpu_photo, gpu_monet), (cpu_photo, cpu_monet) in zip(on_gpu, on_cpu):
        assert gpu_photo.is_cuda
        assert torch.equal(gpu_photo.cpu(), cpu_photo) and torch.equal(gpu_monet.cpu(), cpu_monet)


@pytest.mark.parametrize("saved_on, loaded_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_moves_between_the_gpu_and_the_cpu(gpu_config, saved_on, loaded_on):
    saved = CycleGANTrainer(gpu_config.replace(device=saved_on))
    saved.model.train_step(*fixed_batch(size=64))
    saved.save()
    resumed = CycleGANTrainer(gpu_config.replace(device=loaded_on))
    resumed.load(resumed.checkpoint_path)
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(weights(saved).values(), weights(resumed).values()))
    losses = resumed.model.train_step(*fixed_batch(size=64, seed=1))
    assert all(np.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("saved_amp", ["fp16", "bf16", "off"])
@pytest.mark.parametrize("amp", ["fp16", "bf16", "off"])
def test_resume_across_precisions(gpu_config, saved_amp, amp):
    saved = CycleGANTrainer(gpu_config.replace(amp=saved_amp, fused_adam="on"))
    saved.model.train_step(*fixed_batch(size=64))
    saved.save()
    resumed = CycleGANTrainer(gpu_config.replace(amp=amp, fused_adam="off" if saved_amp == "fp16" else "on"))
    resumed.load(resumed.checkpoint_path)
    losses = resumed.model.train_step(*fixed_batch(size=64, seed=1))
    assert all(np.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("saved_on, saved_fused, fused", [("cpu", "off", "on"), ("cuda", "off", "on"),
                                                         ("cuda", "on", "off")])
def test_resume_between_fused_and_unfused_adam_takes_a_step(gpu_config, saved_on, saved_fused, fused):
    """Fused Adam needs its step counters on the GPU; unfused Adam keeps them on the CPU."""
    saved = CycleGANTrainer(gpu_config.replace(device=saved_on, fused_adam=saved_fused))
    saved.model.train_step(*fixed_batch(size=64))
    saved.save()
    resumed = CycleGANTrainer(gpu_config.replace(fused_adam=fused))
    resumed.load(resumed.checkpoint_path)
    losses = resumed.model.train_step(*fixed_batch(size=64, seed=1))
    assert all(np.isfinite(v) for v in losses.values())
    steps = [state["step"] for opt in (resumed.model.opt_G, resumed.model.opt_D) for state in opt.state.values()]
    assert steps and all(step.is_cuda == (fused == "on") for step in steps)


def test_resume_restores_this_gpus_random_state(gpu_config):
    trainer = CycleGANTrainer(gpu_config.replace(diffaugment="color,translation,cutout"))
    trainer.model.train_step(*fixed_batch(size=64))
    trainer.save()
    expected = torch.rand(8, device="cuda")
    torch.cuda.manual_seed(12345)
    resumed = CycleGANTrainer(gpu_config)
    resumed.load(resumed.checkpoint_path)
    assert torch.equal(torch.rand(8, device="cuda"), expected)


def test_the_trainer_leaves_the_gpu_while_workers_train(gpu_config):
    trainer = CycleGANTrainer(gpu_config.replace(ngf=32, ndf=32))
    nets = trainer.model.networks.values()
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated()
    with off_the_device(trainer):
        assert torch.cuda.memory_allocated() < held - sum(
            p.numel() * p.element_size() for net in nets for p in net.parameters()) / 2
        assert all(not p.is_cuda for net in nets for p in net.parameters())
    assert all(p.is_cuda for net in nets for p in net.parameters())


def test_stylize_and_export_on_the_gpu_match_the_cpu(gpu_config, tmp_path):
    from monet_utils.export import export_generator, load_photo2monet
    from monet_utils.stylize import translate_to_jpegs
    from PIL import Image
    import io
    from .conftest import write_images
    trainer = CycleGANTrainer(gpu_config)
    trainer.model.train_step(*fixed_batch(size=64))
    checkpoint = trainer.save()
    paths = write_images(tmp_path / "photos", 5, size=(96, 72))
    on_cpu = dict(translate_to_jpegs(load_generator(checkpoint, device="cpu")[0], paths, progress=False))
    on_gpu = dict(translate_to_jpegs(load_generator(checkpoint, device="cuda")[0], paths, progress=False))
    assert list(on_cpu) == list(on_gpu)
    for name in on_cpu:  # fp32 against the GPU's fp16/bf16 inference, then JPEG
        a, b = (np.asarray(Image.open(io.BytesIO(d[name])), dtype=np.float32) for d in (on_cpu, on_gpu))
        assert np.abs(a - b).mean() < 4, name
    exported = export_generator(checkpoint, "torchscript", tmp_path / "g.pt")
    photo = fixed_batch(size=64)[0]
    with torch.inference_mode():
        cpu_out = load_photo2monet(exported, "cpu")(photo)
        gpu_out = load_photo2monet(exported, "cuda")(photo.cuda()).cpu()
    assert torch.allclose(cpu_out, gpu_out, atol=2e-2)


def test_translations_run_in_this_gpus_half_precision():
    from monet_utils.acceleration import BF16_CAPABILITY, cuda_capability, inference_autocast
    device = torch.device("cuda", 0)
    with inference_autocast(device):
        out = torch.nn.Conv2d(3, 3, 3).to(device)(torch.ones(1, 3, 8, 8, device=device))
    assert out.dtype == (torch.bfloat16 if cuda_capability(device) >= BF16_CAPABILITY else torch.float16)


def test_fid_features_on_the_gpu_match_the_cpu(tmp_path):
    from monet_utils.fid import extract_features, find_feature_network, image_folder_batches
    from .conftest import write_images
    network = find_feature_network()
    if network is None:
        pytest.skip("no offline Inception network here (requirements-fid.txt)")
    paths = write_images(tmp_path / "images", 8, size=(256, 256))
    cpu = extract_features(network, image_folder_batches(paths, 4), "cpu", progress=False)
    gpu = extract_features(network, image_folder_batches(paths, 4), "cuda", progress=False)
    assert torch.allclose(cpu, gpu, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("nproc, backend", [(1, "nccl"), (2, "gloo")])
def test_torchrun_on_one_gpu_trains_and_saves(dataset_dir, tmp_path, nproc, backend):
    """One process over NCCL, and two sharing the GPU over gloo (NCCL refuses that): the process
    group, the device binding, DDP with CUDA tensors and the clean exit."""
    if nproc > torch.cuda.device_count() and backend == "nccl":
        pytest.skip("needs a GPU per process")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
               "monet_utils.launch", "-p", "data_dir", str(dataset_dir), "-p", "output_dir", str(out)]
    for name, value in dict(image_size=32, ngf=4, ndf=4, n_res_blocks=1, num_workers=0, device="cuda",
                            batch_size=2, max_steps=3, compile="off").items():
        command += ["-p", name, str(value)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    state = read_checkpoint(out / "checkpoints" / "latest.pt")
    assert state["step"] == 3 and len(state["pools"]) == nproc
