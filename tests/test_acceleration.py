"""Speed switches: resolution per device, equivalence to the reference, and non-finite losses."""
import contextlib

import pytest
import torch

from monet_utils import acceleration
from monet_utils.acceleration import check_accelerator, resolve_speed
from monet_utils.config import CycleGANConfig
from monet_utils.gan_model import NonFiniteLossError
from monet_utils.training import CycleGANTrainer

from .test_training import fixed_batch, weights

REFERENCE = dict(amp="off", channels_last="off", compile="off", fused_adam="off", norm="instance")


def run_steps(config, steps=3):
    trainer = CycleGANTrainer(config)
    batch = fixed_batch(size=32)
    return trainer, [trainer.model.train_step(*batch) for _ in range(steps)]


def first_step(config):
    """Losses of one step and the gradients it computed (optimizer steps leave .grad alone)."""
    trainer, losses = run_steps(config, steps=1)
    grads = torch.cat([p.grad.flatten() for net in trainer.model.networks.values() for p in net.parameters()])
    return losses[0], grads


def assert_close_losses(a, b, rel):
    for step_a, step_b in zip(a, b):
        for name in step_a:
            assert step_b[name] == pytest.approx(step_a[name], rel=rel, abs=1e-6), name


@pytest.fixture
def reference(tiny_config):
    return tiny_config.replace(**REFERENCE, ngf=8, n_res_blocks=2)


SWITCHES = [dict(channels_last="on"), dict(norm="group"), dict(fused_adam="on"), dict(compile="on")]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: ",".join(s))
def test_switches_compute_the_reference_losses_and_gradients(reference, switch):
    expected_losses, expected_grads = first_step(reference)
    losses, grads = first_step(reference.replace(**switch))
    assert_close_losses([expected_losses], [losses], rel=1e-4)
    assert ((grads - expected_grads).norm() / expected_grads.norm()).item() < 1e-4


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: ",".join(s))
def test_switches_follow_the_reference_over_several_steps(reference, switch):
    """At the paper's lr, Adam's first updates are +-lr whatever a gradient's size, so rounding-level
    differences become lr-sized weight differences that the GAN game then amplifies (measured: 1e-6
    after one step, 1e-2 after four, for any change of summation order). A small lr keeps the
    trajectories comparable while still running every optimizer step."""
    config = reference.replace(lr=1e-6)
    start = weights(CycleGANTrainer(config))  # the same seed: the same initial weights
    expected, expected_losses = run_steps(config, 4)
    switched, losses = run_steps(config.replace(**switch), 4)
    assert_close_losses(expected_losses, losses, rel=1e-4)
    reference_weights, switched_weights = weights(expected), weights(switched)
    moved = torch.cat([(reference_weights[k] - start[k]).flatten() for k in start]).abs()
    apart = torch.cat([(switched_weights[k] - reference_weights[k]).flatten() for k in start]).abs()
    assert 3.5e-6 < moved.median() < 4.5e-6  # Adam moves a weight by about lr a step: 4 steps of 1e-6
    # 99% agree to a hundredth of one step; the rest are the conv biases that InstanceNorm cancels,
    # whose zero gradient's sign is float noise (tests/test_distributed.py)
    assert apart.quantile(0.99) < 1e-8


def test_channels_last_uses_group_norm_and_compile_keeps_checkpoint_keys(reference):
    trainer = CycleGANTrainer(reference.replace(channels_last="on", compile="on"))
    assert trainer.speed.norm == "group"
    assert any(isinstance(m, torch.nn.GroupNorm) for m in trainer.model.G_photo2monet.modules())
    assert trainer.model.G_photo2monet.model[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert set(trainer.model.G_photo2monet.state_dict()) == set(CycleGANTrainer(reference).model.G_photo2monet.state_dict())


def test_bf16_stays_close_and_still_learns(reference):
    expected, _ = first_step(reference)
    trainer, losses = run_steps(reference.replace(amp="bf16"))
    # bf16 keeps 8 bits of mantissa: about 2-3 significant digits per operation.
    assert_close_losses([expected], losses[:1], rel=5e-2)
    batch = fixed_batch(size=32)
    cycle = [trainer.model.train_step(*batch)["cycle_photo"] for _ in range(25)]
    assert sum(cycle[-3:]) / 3 < 0.75 * sum(l["cycle_photo"] for l in losses) / 3


@pytest.mark.parametrize("native_bf16, amp", [(True, "bf16"), (False, "off")])
def test_auto_on_cpu_and_explicit_choices(monkeypatch, native_bf16, amp):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: native_bf16)
    cpu = torch.device("cpu")
    auto = resolve_speed(CycleGANConfig(), cpu)
    assert (auto.amp, auto.channels_last, auto.compile, auto.fused_adam, auto.data_path) == (
        amp, False, False, False, "memory")
    chosen = resolve_speed(CycleGANConfig(amp="bf16", compile="on", channels_last="on", data_path="loader"), cpu)
    assert (chosen.amp, chosen.compile, chosen.channels_last, chosen.data_path) == ("bf16", True, True, "loader")
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        resolve_speed(CycleGANConfig(amp="fp16"), cpu)


def fake_gpus(monkeypatch, *capabilities):
    """GPUs as PyTorch reports them: a capability per device index (None = the current device,
    index 0), and `is_bf16_supported()` True on every one of them, as on a real T4 (emulation counts)."""
    def get_device_capability(device=None):
        index = torch.device(device).index if device is not None else None
        return capabilities[index or 0]
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.parametrize("capability, amp, compiled", [((9, 0), "bf16", True), ((8, 9), "bf16", True), ((8, 0), "bf16", True),
                                                       ((7, 5), "fp16", True), ((7, 0), "fp16", True),
                                                       ((6, 0), "fp16", False)])
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, capability, amp, compiled):
    fake_gpus(monkeypatch, capability)
    speed = resolve_speed(CycleGANConfig(), torch.device("cuda"))
    assert (speed.amp, speed.compile, speed.fused_adam) == (amp, compiled, True)


def test_the_training_device_decides_not_the_current_one(monkeypatch):
    fake_gpus(monkeypatch, (9, 0), (7, 5))  # current device 0 is an H100, training runs on a T4
    assert resolve_speed(CycleGANConfig(), torch.device("cuda:1")).amp == "fp16"
    assert resolve_speed(CycleGANConfig(), torch.device("cuda:0")).amp == "bf16"


def test_explicit_bf16_on_a_t4_runs_eagerly(monkeypatch, capsys):
    fake_gpus(monkeypatch, (7, 5), (7, 5))  # Kaggle's T4 x2
    speed = resolve_speed(CycleGANConfig(amp="bf16"), torch.device("cuda:1"))
    assert (speed.amp, speed.compile) == ("bf16", False)
    assert "cannot compile bf16 for compute capability 7.5" in capsys.readouterr().out
    assert resolve_speed(CycleGANConfig(amp="fp16"), torch.device("cuda:1")).compile


def test_compile_is_refused_below_capability_7(monkeypatch, capsys):
    fake_gpus(monkeypatch, (6, 0))
    assert not resolve_speed(CycleGANConfig(compile="on"), torch.device("cuda")).compile
    assert "compute capability 7.0+" in capsys.readouterr().out


def test_check_accelerator_reads_the_training_device(monkeypatch):
    fake_gpus(monkeypatch, (7, 5), (6, 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: ["Tesla T4", "Tesla P100"][
        torch.device(device).index or 0])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_70", "sm_75", "sm_80", "sm_90"])
    assert "Tesla T4 (compute capability 7.5)" in check_accelerator("cuda:0")
    with pytest.raises(RuntimeError, match="Tesla P100 .*6.0.*GPU T4 x2"):
        check_accelerator("cuda:1")
    assert check_accelerator("cpu").startswith(f"PyTorch {torch.__version__}. No GPU")


def test_a_non_finite_loss_is_skipped_and_repeated_ones_stop_training(tiny_config):
    trainer = CycleGANTrainer(tiny_config.replace(max_skipped_steps=3))
    photo, monet = fixed_batch()
    photo[0, 0, 0, 0] = float("nan")
    before = weights(trainer)
    losses = trainer.model.train_step(photo, monet)
    assert losses["cycle_photo"] != losses["cycle_photo"]  # nan
    after = weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)  # no weight moved
    assert trainer.model.skipped_in_a_row == 1
    trainer.model.train_step(*fixed_batch())  # a finite step resets the count and trains
    assert trainer.model.skipped_in_a_row == 0 and trainer.model.skipped_total == 1
    trainer.model.train_step(photo, monet)
    trainer.model.train_step(photo, monet)
    with pytest.raises(NonFiniteLossError, match="not finite for 3 steps in a row.*last checkpoint is intact"):
        trainer.model.train_step(photo, monet)


def test_one_grad_scaler_serves_both_optimizers_and_backs_off_on_overflow(tiny_config):
    """The fp16 logic on CPU: a scale so large that the scaled gradients overflow makes the
    scaler skip both optimizers and halve the scale; a sane scale then trains both."""
    trainer = CycleGANTrainer(tiny_config)
    trainer.model.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1)
    before = weights(trainer)
    trainer.model.train_step(*fixed_batch())
    assert all(torch.equal(before[k], v) for k, v in weights(trainer).items())
    assert trainer.model.scaler.get_scale() == 2.0 ** 126
    trainer.model.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    trainer.model.train_step(*fixed_batch())
    changed = weights(trainer)
    for prefix in ("G_photo2monet", "D_monet"):
        assert any(not torch.equal(before[k], changed[k]) for k in before if k.startswith(prefix))


def test_non_finite_skip_backs_off_the_fp16_scale(tiny_config):
    trainer = CycleGANTrainer(tiny_config)
    trainer.model.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    photo, monet = fixed_batch()
    photo[0, 0, 0, 0] = float("inf")
    trainer.model.train_step(photo, monet)
    assert trainer.model.scaler.get_scale() == 512.0


def test_check_accelerator_reads_arch_names_with_a_feature_suffix(monkeypatch):
    """Builds list arch-specific targets such as sm_90a and sm_100a beside the plain ones."""
    fake_gpus(monkeypatch, (9, 0), (6, 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: ["NVIDIA H100", "Tesla P100"][
        torch.device(device).index or 0])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_90a", "sm_100a", "sm_120", "compute_120"])
    assert "NVIDIA H100 (compute capability 9.0)" in check_accelerator("cuda:0")
    with pytest.raises(RuntimeError, match="Tesla P100 .*6.0.*sm_75"):
        check_accelerator("cuda:1")


def test_compile_really_compiles_graphs_and_gives_the_eager_result(reference, capsys):
    """suppress_errors would turn a failed compile into eager mode: count dynamo's graphs."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    expected_losses, _ = first_step(reference)
    assert counters["stats"]["unique_graphs"] == 0
    losses, _ = first_step(reference.replace(compile="on"))
    assert counters["stats"]["unique_graphs"] >= 4  # a graph per network at least (the Ds, in two modes)
    assert_close_losses([expected_losses], [losses], rel=1e-4)
    assert "torch.compile" not in capsys.readouterr().err


def test_a_compiler_failure_is_one_line_per_network_and_training_runs_eagerly(reference, monkeypatch, capsys):
    import torch._inductor.compile_fx

    def broken_compiler(graph, example_inputs):
        raise RuntimeError("backend exploded\nwith a long traceback after it")

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", broken_compiler)
    torch._dynamo.reset()
    expected_losses, expected_grads = first_step(reference)
    losses, grads = first_step(reference.replace(compile="on"))
    err = capsys.readouterr().err
    for name in ("G_photo2monet", "G_monet2photo", "D_monet", "D_photo"):
        assert (f"torch.compile failed for {name} (RuntimeError: backend exploded): {name} runs eagerly"
                in err), err
    assert "with a long traceback" not in err
    assert_close_losses([expected_losses], [losses], rel=1e-5)
    assert torch.allclose(grads, expected_grads, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_translations_run_in_the_gpus_half_precision_and_in_fp32_on_the_cpu(monkeypatch, capability, dtype):
    """A T4 (7.5) translates in fp16, an A100 or H100 in bf16; fp32 everywhere would pass unseen."""
    monkeypatch.setattr(acceleration, "cuda_capability", lambda device: capability)
    entered = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: entered.append((device_type, dtype))
                        or contextlib.nullcontext())
    with acceleration.inference_autocast(torch.device("cuda", 0)):
        pass
    with acceleration.inference_autocast(torch.device("cpu")):
        pass
    assert entered == [("cuda", dtype)]
