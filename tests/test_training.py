import os
import signal

import pytest
import torch

from monet_utils.checkpoints import read_checkpoint
from monet_utils.data import build_dataset, make_train_loader
from monet_utils.cyclegan import LOSS_NAMES
from monet_utils.gan_model import load_optimizer
from monet_utils.training import CycleGANTrainer, TrainingInterrupted


def fixed_batch(size=32, n=2, seed=0):
    """Smooth random images (upsampled 4x4 noise): learnable, unlike white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2 * n, 3, 4, 4, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return images[:n], images[n:]


def weights(trainer):
    return {f"{name}.{k}": v.clone() for name, net in trainer.model.networks.items() for k, v in net.state_dict().items()}


def test_train_step_returns_every_named_loss_and_updates_all_networks(tiny_config):
    trainer = CycleGANTrainer(tiny_config)
    before = weights(trainer)
    losses = trainer.model.train_step(*fixed_batch())
    assert set(losses) == set(LOSS_NAMES)
    assert all(isinstance(v, float) and v == v for v in losses.values())
    after = weights(trainer)
    for name in trainer.model.networks:
        changed = [not torch.equal(before[k], after[k]) for k in before if k.startswith(name + ".")]
        assert any(changed), f"{name} was not updated"
    assert all(p.requires_grad for net in trainer.model.networks.values() for p in net.parameters())


def test_identity_loss_is_half_the_cycle_lambda_times_l1_by_default(tiny_config):
    photo, monet = fixed_batch()
    trainer = CycleGANTrainer(tiny_config)
    with torch.no_grad():
        l1_photo2monet = (trainer.model.G_photo2monet(monet) - monet).abs().mean().item()
        l1_monet2photo = (trainer.model.G_monet2photo(photo) - photo).abs().mean().item()
    with_idt = trainer.model.train_step(photo, monet)
    assert with_idt["idt_photo2monet"] == pytest.approx(0.5 * 10.0 * l1_photo2monet, rel=1e-5)
    assert with_idt["idt_monet2photo"] == pytest.approx(0.5 * 10.0 * l1_monet2photo, rel=1e-5)
    without = CycleGANTrainer(tiny_config.replace(identity_weight=0.0)).model.train_step(photo, monet)
    assert without["idt_photo2monet"] == without["idt_monet2photo"] == 0.0


def test_a_few_steps_on_a_fixed_batch_reduce_the_cycle_loss(tiny_config):
    trainer = CycleGANTrainer(tiny_config.replace(ngf=8, n_res_blocks=2))
    batch = fixed_batch()
    cycle = [trainer.model.train_step(*batch)["cycle_photo"] for _ in range(25)]
    assert sum(cycle[-3:]) / 3 < 0.75 * sum(cycle[:3]) / 3


def test_fit_stops_at_max_steps_and_checkpoints(tiny_config, dataset_dir):
    config = tiny_config.replace(max_steps=4, epochs=5)
    trainer = CycleGANTrainer(config)
    history = trainer.fit(make_train_loader(config, build_dataset(config, dataset_dir)), progress=False)
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert [h["epoch"] for h in history] == [0, 0, 0, 1]  # 6 photos / batch 2 = 3 steps an epoch
    assert trainer.checkpoint_path.exists()
    assert not list(trainer.checkpoint_path.parent.glob("*.tmp"))
    assert (trainer.checkpoint_path.parent / "config.json").exists()


@pytest.mark.parametrize("diffaugment", ["", "color,translation,cutout"])
@pytest.mark.parametrize("data_path", ["loader", "memory"])
def test_resume_gives_the_same_weights_as_one_straight_run(tiny_config, dataset_dir, tmp_path, data_path, diffaugment):
    """7 steps straight vs 4 steps, a new trainer loading the checkpoint, then 3 more. With 3
    steps an epoch the stop falls mid-epoch after an LR decay step, the rest crosses another
    boundary, and the pools (size 3) are full and swapping. DiffAugment draws from the global
    RNG, which the checkpoint restores: nothing else may draw from it between save and resume."""
    def run(config):
        trainer = CycleGANTrainer(config)
        trainer.fit(trainer.train_loader(build_dataset(config, dataset_dir)), progress=False)
        return trainer

    base = tiny_config.replace(epochs=3, decay_epochs=2, data_path=data_path, diffaugment=diffaugment)
    straight = run(base.replace(max_steps=7, output_dir=str(tmp_path / "straight")))
    run(base.replace(max_steps=4, output_dir=str(tmp_path / "split")))
    resumed = run(base.replace(max_steps=7, output_dir=str(tmp_path / "split")))

    assert resumed.step == straight.step == 7
    assert [h["cycle_photo"] for h in resumed.history] == [h["cycle_photo"] for h in straight.history]
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.model.opt_G.param_groups[0]["lr"] == straight.model.opt_G.param_groups[0]["lr"]


def test_a_finished_run_run_again_says_it_is_finished(tiny_config, dataset_dir, capsys):
    """It said "Resuming from ...: step 6, epoch 3 of 2"."""
    config = tiny_config.replace(epochs=2)
    for _ in range(2):
        trainer = CycleGANTrainer(config)
        trainer.fit(trainer.train_loader(build_dataset(config, dataset_dir)), progress=False)
    out = capsys.readouterr().out
    assert f"Resuming from {trainer.checkpoint_path}: step 6; its 2 epochs are done, there is nothing left to train" in out
    assert "epoch 3 of 2" not in out and trainer.step == 6


def test_metrics_summarise_the_last_tenth_and_time_adds_up_over_resumes(tiny_config, dataset_dir):
    config = tiny_config.replace(max_steps=10, epochs=4)
    trainer = CycleGANTrainer(config)
    trainer.fit(make_train_loader(config, build_dataset(config, dataset_dir)), progress=False)
    metrics = trainer.metrics()
    assert metrics["steps"] == 10 and metrics["epochs_completed"] == 3 and metrics["device"] == "cpu"
    assert metrics["final"]["cycle_photo"] == trainer.history[-1]["cycle_photo"]  # a tenth of 10 steps is 1
    assert metrics["mean"]["D_monet"] == pytest.approx(sum(h["D_monet"] for h in trainer.history) / 10)
    first = trainer.train_seconds
    exact = CycleGANTrainer(config.replace(max_steps=6, output_dir=config.output_dir + "_exact"))
    exact.fit(make_train_loader(config, build_dataset(config, dataset_dir)), progress=False)
    assert exact.metrics()["epochs_completed"] == 2  # max_steps ending exactly on an epoch completes it
    assert exact.sched_G.last_epoch == 2
    assert first > 0
    resumed = CycleGANTrainer(config.replace(max_steps=12))
    resumed.fit(make_train_loader(config, build_dataset(config, dataset_dir)), progress=False)
    assert resumed.train_seconds > first and len(resumed.history) == 12


def count_saves(trainer, monkeypatch):
    steps = []
    real_save = trainer.save
    monkeypatch.setattr(trainer, "save", lambda *a, **k: steps.append(trainer.step) or real_save(*a, **k))
    return steps


@pytest.mark.parametrize("minutes, saved_at", [(0.0, [3, 5]), (1e-7, [1, 2, 3, 4, 5])])
def test_checkpoints_are_also_written_by_time(tiny_config, dataset_dir, monkeypatch, minutes, saved_at):
    """checkpoint_every is far away: with checkpoint_minutes=0 only epoch ends (3 steps each) and the
    end save; with a few microseconds every step is due."""
    config = tiny_config.replace(max_steps=5, epochs=2, checkpoint_every=1000, checkpoint_minutes=minutes)
    trainer = CycleGANTrainer(config)
    saves = count_saves(trainer, monkeypatch)
    trainer.fit(trainer.train_loader(build_dataset(config, dataset_dir)), progress=False)
    assert saves == saved_at


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(tiny_config, dataset_dir, tmp_path,
                                                                              monkeypatch, signum):
    base = tiny_config.replace(epochs=3, max_steps=7)
    straight = CycleGANTrainer(base.replace(output_dir=str(tmp_path / "straight")))
    straight.fit(straight.train_loader(build_dataset(base, dataset_dir)), progress=False)

    config = base.replace(output_dir=str(tmp_path / "stopped"))
    stopped = CycleGANTrainer(config)
    real_step = stopped.model.train_step

    def step_then_signal(*batch):  # the signal lands in the middle of step 4
        losses = real_step(*batch)
        if len(stopped.history) == 3:
            os.kill(os.getpid(), signum)
        return losses

    monkeypatch.setattr(stopped.model, "train_step", step_then_signal)
    previous = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(signum).name}: training stopped after step 4"):
        stopped.fit(stopped.train_loader(build_dataset(config, dataset_dir)), progress=False)
    assert signal.getsignal(signum) is previous  # the handler is put back
    assert read_checkpoint(stopped.checkpoint_path)["step"] == 4

    resumed = CycleGANTrainer(config)
    resumed.fit(resumed.train_loader(build_dataset(config, dataset_dir)), progress=False)
    assert resumed.step == 7
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def trainer_as(config, fp16_scaler: bool, fused: bool) -> CycleGANTrainer:
    """A trainer whose scaler and Adam are those of a GPU run: fp16 (a T4: an enabled GradScaler, here
    the CPU's, which runs the same unscale/skip/update logic) or bf16/off (a disabled one), fused or not."""
    trainer = CycleGANTrainer(config.replace(fused_adam="on" if fused else "off"))
    if fp16_scaler:
        trainer.model.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    return trainer


@pytest.mark.parametrize("saved_fp16, saved_fused", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("fp16, fused", [(False, False), (False, True), (True, False), (True, True)])
def test_resume_works_across_every_pair_of_precisions_and_fused_settings(tiny_config, tmp_path, saved_fp16,
                                                                        saved_fused, fp16, fused):
    """Chained sessions on different hardware (Colab's A100, then Kaggle's T4). A run without fp16 saves
    an empty scaler state, which an enabled GradScaler refuses; and Optimizer.load_state_dict used to
    bring back the saved run's `fused` flag over this run's."""
    config = tiny_config.replace(output_dir=str(tmp_path / "run"))
    saved = trainer_as(config, saved_fp16, saved_fused)
    saved.model.train_step(*fixed_batch())
    saved.save()
    resumed = trainer_as(config, fp16, fused)
    resumed.load(resumed.checkpoint_path)
    before = weights(resumed)
    losses = resumed.model.train_step(*fixed_batch(seed=1))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(before[k], v) for k, v in weights(resumed).items())  # the step was taken
    assert all(group["fused"] == (fused or None) for group in resumed.model.opt_G.param_groups)
    if fp16:  # the saved scale when there was one, else a fresh scaler's
        expected = saved.model.scaler.get_scale() if saved_fp16 else 2.0 ** 10
        assert resumed.model.scaler.get_scale() == expected


@pytest.mark.parametrize("saved_on_device", [False, True], ids=["saved-on-cpu", "saved-on-device"])
@pytest.mark.parametrize("on_device", [False, True], ids=["resumed-unfused", "resumed-fused"])
def test_loaded_step_counters_sit_where_this_runs_adam_needs_them(saved_on_device, on_device):
    """Optimizer.load_state_dict places each `step` counter by the saved groups' flags: a CPU run's
    checkpoint resumed with fused Adam on a GPU failed its first step (fused Adam wants its counters
    on the device), and a fused one resumed unfused kept them on the GPU (a sync per parameter per
    step). Meta tensors stand for a GPU's here: capturable Adam, like fused, keeps its counters on
    the parameters' device, and the flags decide alike (the GPU test resumes fused for real)."""
    net = torch.nn.Linear(2, 2)
    saving = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    saving.step()
    saved = saving.state_dict()
    for group in saved["param_groups"]:
        group["capturable"] = saved_on_device
    params = [torch.nn.Parameter(torch.empty(p.shape, device="meta")) for p in net.parameters()]
    resumed = torch.optim.Adam(params, capturable=on_device)
    load_optimizer(resumed, saved)
    assert all(group["capturable"] == on_device for group in resumed.param_groups)
    steps = [state["step"] for state in resumed.state.values()]
    assert len(steps) == 2
    assert all(step.device.type == ("meta" if on_device else "cpu") and step.dtype == torch.float32 for step in steps)


def test_each_process_draws_its_own_random_numbers_after_the_same_initial_weights(tiny_config, monkeypatch):
    """`manual_seed(seed)` in every process made DiffAugment augment both halves of a global batch alike."""
    from monet_utils import training
    rank0 = CycleGANTrainer(tiny_config)
    draws0 = torch.rand(8)
    torch.manual_seed(tiny_config.seed)
    init_weights_draws = [p.detach().clone() for p in CycleGANTrainer(tiny_config).model.G_photo2monet.parameters()]
    with monkeypatch.context() as patched:
        patched.setattr(training, "rank_and_world", lambda: (1, 2))  # the trainer's view of itself only
        rank1 = CycleGANTrainer(tiny_config)
        draws1 = torch.rand(8)
    assert rank1.rank == 1
    assert all(torch.equal(a, b) for a, b in zip(weights(rank0).values(), weights(rank1).values()))
    assert not torch.equal(draws0, draws1)
    CycleGANTrainer(tiny_config)  # rank 0 again: the one-process stream is unchanged
    assert torch.equal(torch.rand(8), draws0)
    assert all(torch.equal(a, b) for a, b in zip(init_weights_draws, rank0.model.G_photo2monet.parameters()))


def test_resume_restores_the_global_random_state(tiny_config):
    """DiffAugment draws from it in every step, so a fresh trainer's state is not the saved one."""
    tiny_config = tiny_config.replace(diffaugment="color,translation,cutout")
    trainer = CycleGANTrainer(tiny_config)
    trainer.model.train_step(*fixed_batch())
    trainer.save()
    expected = torch.rand(8)  # what the next step would have drawn
    torch.manual_seed(12345)
    resumed = CycleGANTrainer(tiny_config)
    resumed.load(resumed.checkpoint_path)
    assert torch.equal(torch.rand(8), expected)


def fake_cuda_rng(monkeypatch, device_count: int) -> list:
    """CUDA random states as the hardware keeps them: one generator per visible device, and an
    IndexError for any other index (torch.cuda.default_generators is a tuple of them)."""
    calls = []

    def set_rng_state(state, device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        if (index or 0) >= device_count:
            raise IndexError("tuple index out of range")
        calls.append((int(state[0]), index or 0))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: device_count)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    return calls


def test_a_checkpoint_of_two_gpus_resumes_on_a_machine_with_one(tiny_config, monkeypatch):
    """Kaggle's T4 x2, then one GPU: restoring every saved GPU's state raised IndexError."""
    from monet_utils.training import restore_rng
    trainer = CycleGANTrainer(tiny_config)
    state = trainer.state_dict()
    old_format = {**{k: v for k, v in state.items() if k != "rng"}, "torch_rng": torch.get_rng_state(),
                  "cuda_rng": [torch.tensor([10], dtype=torch.uint8), torch.tensor([11], dtype=torch.uint8)]}
    calls = fake_cuda_rng(monkeypatch, device_count=1)
    trainer.checkpoint_path.parent.mkdir(parents=True)
    torch.save(old_format, trainer.checkpoint_path)
    trainer.load(trainer.checkpoint_path)  # a CPU run leaves CUDA's streams alone
    assert calls == []
    restore_rng(old_format, rank=0, device=torch.device("cuda:0"))  # a one-GPU run takes its own
    assert calls == [(10, 0)]
    cpu_states = [torch.manual_seed(100 + r).get_state() for r in range(2)]
    by_rank = {"rng": [{"torch": cpu_states[r], "cuda": torch.tensor([20 + r], dtype=torch.uint8)} for r in range(2)]}
    for rank in range(2):  # each process its own rank's states, the CUDA one on its own device
        calls.clear()
        restore_rng(by_rank, rank=rank, device=torch.device("cuda:0"))
        assert calls == [(20 + rank, 0)] and torch.equal(torch.get_rng_state(), cpu_states[rank])


@pytest.mark.parametrize("gan_mode", ["lsgan", "bce"])
def test_every_loss_term_is_the_papers_computed_with_the_same_networks(tiny_config, gan_mode):
    """Each term recomputed from copies of the networks as they were before the step (both losses
    are computed before either optimizer steps). A swap of D_monet and D_photo, of the pools' fakes,
    or of a generator's direction changes a term; the identity weight is checked by value; the
    adversarial terms are least squares, or with gan_mode="bce" the log loss on logits."""
    import copy
    from torch.nn import functional as F
    config = tiny_config.replace(pool_size=0, cycle_lambda=7.0, identity_weight=0.3, gan_mode=gan_mode)
    trainer = CycleGANTrainer(config)
    nets = {name: copy.deepcopy(net) for name, net in trainer.model.networks.items()}
    photo, monet = fixed_batch()
    losses = trainer.model.train_step(photo, monet)
    G, F_, D_monet, D_photo = nets["G_photo2monet"], nets["G_monet2photo"], nets["D_monet"], nets["D_photo"]
    criterion = {"lsgan": F.mse_loss, "bce": F.binary_cross_entropy_with_logits}[gan_mode]
    mse_to = lambda prediction, value: criterion(prediction, torch.full_like(prediction, value))  # noqa: E731
    with torch.no_grad():
        fake_monet, fake_photo = G(photo), F_(monet)
        expected = {
            "adv_photo2monet": mse_to(D_monet(fake_monet), 1.0),
            "adv_monet2photo": mse_to(D_photo(fake_photo), 1.0),
            "cycle_photo": 7.0 * (F_(fake_monet) - photo).abs().mean(),
            "cycle_monet": 7.0 * (G(fake_photo) - monet).abs().mean(),
            "idt_photo2monet": 7.0 * 0.3 * (G(monet) - monet).abs().mean(),
            "idt_monet2photo": 7.0 * 0.3 * (F_(photo) - photo).abs().mean(),
            "D_monet": 0.5 * (mse_to(D_monet(monet), 1.0) + mse_to(D_monet(fake_monet), 0.0)),
            "D_photo": 0.5 * (mse_to(D_photo(photo), 1.0) + mse_to(D_photo(fake_photo), 0.0)),
        }
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value.item(), rel=1e-5), name
    assert len({round(v, 6) for v in losses.values()}) == len(losses)  # no two terms alike by accident


def test_each_pool_holds_its_own_domains_fakes(tiny_config):
    trainer = CycleGANTrainer(tiny_config.replace(pool_size=4))
    photo, monet = fixed_batch()
    G, F_ = (copy_of(trainer.model.G_photo2monet), copy_of(trainer.model.G_monet2photo))
    trainer.model.train_step(photo, monet)
    with torch.no_grad():
        assert torch.allclose(torch.stack(trainer.model.pool_monet.images), G(photo), atol=1e-6)
        assert torch.allclose(torch.stack(trainer.model.pool_photo.images), F_(monet), atol=1e-6)


def copy_of(net):
    import copy
    return copy.deepcopy(net)
