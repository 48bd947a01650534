import os
import signal

import pytest
import torch

from monet_utils.checkpoints import read_checkpoint
from monet_utils.data import build_dataset, make_train_loader
from monet_utils.training import LOSS_NAMES, CycleGANTrainer, TrainingInterrupted


def fixed_batch(size=32, n=2, seed=0):
    """Smooth random images (upsampled 4x4 noise): learnable, unlike white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2 * n, 3, 4, 4, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return images[:n], images[n:]


def weights(trainer):
    return {f"{name}.{k}": v.clone() for name, net in trainer.networks.items() for k, v in net.state_dict().items()}


def test_train_step_returns_every_named_loss_and_updates_all_networks(tiny_config):
    trainer = CycleGANTrainer(tiny_config)
    before = weights(trainer)
    losses = trainer.train_step(*fixed_batch())
    assert set(losses) == set(LOSS_NAMES)
    assert all(isinstance(v, float) and v == v for v in losses.values())
    after = weights(trainer)
    for name in trainer.networks:
        changed = [not torch.equal(before[k], after[k]) for k in before if k.startswith(name + ".")]
        assert any(changed), f"{name} was not updated"
    assert all(p.requires_grad for net in trainer.networks.values() for p in net.parameters())


def test_identity_loss_is_weighted_by_half_the_cycle_lambda(tiny_config):
    photo, monet = fixed_batch()
    with_idt = CycleGANTrainer(tiny_config).train_step(photo, monet)
    double = CycleGANTrainer(tiny_config.replace(identity_weight=1.0)).train_step(photo, monet)
    assert double["idt_photo2monet"] == pytest.approx(2 * with_idt["idt_photo2monet"], rel=1e-5)
    without = CycleGANTrainer(tiny_config.replace(identity_weight=0.0)).train_step(photo, monet)
    assert without["idt_photo2monet"] == without["idt_monet2photo"] == 0.0


def test_a_few_steps_on_a_fixed_batch_reduce_the_cycle_loss(tiny_config):
    trainer = CycleGANTrainer(tiny_config.replace(ngf=8, n_res_blocks=2))
    batch = fixed_batch()
    cycle = [trainer.train_step(*batch)["cycle_photo"] for _ in range(25)]
    assert sum(cycle[-3:]) / 3 < 0.75 * sum(cycle[:3]) / 3


def test_the_lagged_schedule_is_the_reference_one_epoch_later(tiny_config):
    trainer = CycleGANTrainer(tiny_config.replace(epochs=4, decay_epochs=2, lr_schedule="lagged"))
    assert [trainer.lr_factor(e) for e in range(4)] == pytest.approx([1, 1, 2 / 3, 1 / 3])
    for _ in range(2):  # two finished epochs
        trainer.opt_G.step()
        trainer.sched_G.step()
    assert trainer.opt_G.param_groups[0]["lr"] == pytest.approx(2e-4 * 2 / 3)


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
    assert resumed.opt_G.param_groups[0]["lr"] == straight.opt_G.param_groups[0]["lr"]


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
    real_step = stopped.train_step

    def step_then_signal(*batch):  # the signal lands in the middle of step 4
        losses = real_step(*batch)
        if len(stopped.history) == 3:
            os.kill(os.getpid(), signum)
        return losses

    monkeypatch.setattr(stopped, "train_step", step_then_signal)
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
