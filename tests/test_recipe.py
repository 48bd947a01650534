"""The recipe options of issue 11: the reference LR schedule, DiffAugment, the U-Net and
resize-conv generators, the held-out paintings, the time plan, and resuming from another run."""
import time

import pytest
import torch
import torch.nn.functional as F

from monet_utils.config import ConfigError, CycleGANConfig
from monet_utils.data import build_dataset, make_train_loader, split_paintings
from monet_utils.diffaugment import TRANSFORMS, diff_augment
from monet_utils.models import ResnetGenerator, UnetGenerator, build_generator, count_parameters, unet_depth
from monet_utils.time_budget import SESSION_STARTED_ENV, plan_schedule
from monet_utils.cyclegan import LOSS_NAMES
from monet_utils.training import CycleGANTrainer

from .conftest import write_images

# The stand-in steps below never step an optimizer, which the LR scheduler warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")


class BatchesOf:
    """A stand-in loader: `steps_per_epoch` batches of one fixed pair, and the calls made."""

    def __init__(self, steps_per_epoch: int, size: int = 32):
        self.steps_per_epoch, self.start = steps_per_epoch, 0
        self.batch = (torch.zeros(2, 3, size, size), torch.zeros(2, 3, size, size))

    def set_epoch(self, epoch, start_batch=0):
        self.start = start_batch

    def __iter__(self):
        return iter([self.batch] * (self.steps_per_epoch - self.start))


def record_lr_per_step(trainer, monkeypatch, seconds_per_step=0.0, clock=None):
    """Replace the step by one that records (epoch, lr) and, with `clock`, advances it by
    `seconds_per_step` (or by `seconds_per_step(n)` for the n-th step of this fit, from 0)."""
    seen = []

    def step(photo, monet):
        seen.append((trainer.epoch, trainer.model.opt_G.param_groups[0]["lr"], trainer.model.opt_D.param_groups[0]["lr"]))
        if clock is not None:
            clock.advance(seconds_per_step(len(seen) - 1) if callable(seconds_per_step) else seconds_per_step)
        return dict.fromkeys(LOSS_NAMES, 0.0)

    monkeypatch.setattr(trainer.model, "train_step", step)
    return seen


def reference_lrs(n_epochs, n_epochs_decay, lr):
    """The LR of each epoch in pytorch-CycleGAN-and-pix2pix: networks.get_scheduler's 'linear'
    rule (epoch_count=1), stepped by model.update_learning_rate() at the start of every epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    rule = lambda epoch: 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, rule)
    lrs = []
    for _ in range(1, n_epochs + n_epochs_decay + 1):
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("constant, decay", [(3, 3), (1, 4), (5, 2)])
def test_the_lr_of_every_epoch_is_the_reference_codes(tiny_config, monkeypatch, constant, decay):
    trainer = CycleGANTrainer(tiny_config.replace(epochs=constant + decay, decay_epochs=decay))
    seen = record_lr_per_step(trainer, monkeypatch)
    trainer.fit(BatchesOf(steps_per_epoch=2), progress=False)
    expected = reference_lrs(constant, decay, tiny_config.lr)
    assert [lr for epoch, lr, _ in seen[::2]] == pytest.approx(expected)
    assert [lr_d for *_, lr_d in seen] == [lr_g for _, lr_g, _ in seen]  # both optimizers
    assert expected[-1] == 0.0 and [epoch for epoch, *_ in seen[::2]] == list(range(constant + decay))


def test_without_decay_epochs_the_lr_stays_constant(tiny_config, monkeypatch):
    trainer = CycleGANTrainer(tiny_config.replace(epochs=3))
    seen = record_lr_per_step(trainer, monkeypatch)
    trainer.fit(BatchesOf(steps_per_epoch=1), progress=False)
    assert [lr for _, lr, _ in seen] == [tiny_config.lr] * 3


# DiffAugment


def test_diffaugment_keeps_shapes_and_gradients_and_changes_each_image_its_own_way():
    torch.manual_seed(0)
    images = (torch.rand(6, 3, 32, 32) * 2 - 1).requires_grad_()
    for policy in [*TRANSFORMS, "color,translation,cutout"]:
        out = diff_augment(images, policy)
        assert out.shape == images.shape and out.dtype == images.dtype
        out.square().sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0, policy
        images.grad = None
        changes = (out - images).detach().flatten(1).abs().sum(1)
        assert (changes > 0).sum() >= 5, policy  # nearly every image is changed (a zero shift can draw)
    assert diff_augment(images, "") is images


def test_translation_shifts_and_cutout_zeroes_a_square():
    torch.manual_seed(1)
    image = torch.arange(16.0).view(1, 1, 4, 4).repeat(8, 3, 1, 1) + 1
    shifted = TRANSFORMS["translation"][0](image, ratio=0.25)  # up to 1 pixel each way
    for out in shifted:
        kept = out[0][out[0] > 0]
        assert len(kept) >= 9 and set(kept.tolist()) <= set(range(1, 17))  # moved pixels, zeros shifted in
    cut = TRANSFORMS["cutout"][0](image, ratio=0.5)
    zeroed = (cut[:, 0] == 0).flatten(1).sum(1)
    assert zeroed.min() >= 1 and zeroed.max() <= 4  # a 2x2 square, clipped at an edge


def test_discriminators_see_augmented_real_and_fake_images(tiny_config, monkeypatch):
    from monet_utils import gan_model
    calls = []
    monkeypatch.setattr(gan_model, "diff_augment", lambda images, policy: calls.append((policy, images)) or images)
    trainer = CycleGANTrainer(tiny_config.replace(diffaugment="color,cutout"))
    real_photo, real_monet = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    trainer.model.train_step(real_photo, real_monet)
    assert len(calls) == 6 and {policy for policy, _ in calls} == {"color,cutout"}
    # G step: both fakes (with gradients); D step: each D's real images and a pooled fake
    assert sum(images.requires_grad for _, images in calls[:2]) == 2
    judged = [images for _, images in calls[2:]]
    assert any(torch.equal(images, real_monet) for images in judged)
    assert any(torch.equal(images, real_photo) for images in judged)
    assert sum(not any(torch.equal(images, r) for r in (real_photo, real_monet)) for images in judged) == 2


def test_diffaugment_reaches_the_generators_gradients(tiny_config):
    torch.manual_seed(0)
    trainer = CycleGANTrainer(tiny_config.replace(diffaugment="color,translation,cutout"))
    before = [p.detach().clone() for p in trainer.model.G_photo2monet.parameters()]
    losses = trainer.model.train_step(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.G_photo2monet.parameters()))


def test_d_layers_builds_both_discriminators_with_that_patch_and_zero_is_named(tiny_config):
    from monet_utils.models import receptive_field
    model = CycleGANTrainer(tiny_config.replace(d_layers=1)).model
    assert [receptive_field(d) for d in (model.D_monet, model.D_photo)] == [16, 16]
    assert receptive_field(CycleGANTrainer(tiny_config).model.D_monet) == 70  # the default: the paper's
    with pytest.raises(ConfigError, match="'d_layers' must be a positive integer, got 0"):
        CycleGANConfig(d_layers=0)


def test_an_unknown_diffaugment_policy_is_named():
    with pytest.raises(ConfigError, match="'diffaugment'.*'colour,cutout'"):
        CycleGANConfig(diffaugment="colour,cutout")


# Generators


def test_the_unet_is_the_reference_unet_256():
    unet = UnetGenerator(ngf=64, depth=8)
    # The reference's unet_256 with InstanceNorm: every conv keeps its bias, no norm parameters.
    convs = [m for m in unet.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 16 and all(c.bias is not None for c in convs)
    assert unet(torch.zeros(1, 3, 256, 256)).shape == (1, 3, 256, 256)
    assert unet_depth(256) == 8 and unet_depth(64) == 6 and unet_depth(96) == 5
    small = UnetGenerator(ngf=4, depth=5)
    assert small(torch.zeros(2, 3, 48, 80)).shape == (2, 3, 48, 80)  # any size, as stylize feeds it
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(small(x), small.model(x))  # sizes that halve evenly are not padded
    assert count_parameters(unet) == 54_409_603


def test_resize_conv_upsampling_has_no_transposed_conv_and_keeps_sizes():
    for generator in ("resnet", "unet"):
        config = CycleGANConfig(image_size=64, ngf=8, n_res_blocks=1, generator=generator, upsampling="resize_conv")
        net = build_generator(config)
        assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
        assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 64, 64)
    assert isinstance(build_generator(CycleGANConfig(ngf=8)), ResnetGenerator)


def test_resize_conv_has_no_checkerboard_from_a_constant_input():
    """A transposed conv with stride 2 and a 3x3 kernel overlaps unevenly: even a constant input
    comes out in a 2x2 pattern. Nearest x2 + conv maps a constant to a constant."""
    from monet_utils.models import upsample
    torch.manual_seed(0)
    constant = torch.ones(1, 4, 8, 8)
    for kind, periodic in (("transposed", True), ("resize_conv", False)):
        out = upsample(4, 4, kind, kernel_size=3, padding=1, output_padding=1)(constant)[0, 0, 2:-2, 2:-2]
        assert out.shape == (12, 12)
        assert (out.std() > 1e-3) == periodic, kind


def test_a_unet_needs_an_image_size_it_can_halve_five_times():
    with pytest.raises(ConfigError, match="unet.*multiple of 32.*got 48"):
        CycleGANConfig(generator="unet", image_size=48)


@pytest.mark.parametrize("change", [dict(generator="unet", image_size=32), dict(upsampling="resize_conv"),
                                    dict(d_layers=2)])
def test_a_checkpoint_of_another_architecture_is_refused_by_name(tiny_config, change):
    from monet_utils.checkpoints import CheckpointError
    CycleGANTrainer(tiny_config).save()
    with pytest.raises(CheckpointError, match=f"another architecture.*{next(iter(change))}"):
        CycleGANTrainer(tiny_config.replace(**change)).load(CycleGANTrainer(tiny_config).checkpoint_path)


# Held-out paintings


def test_held_out_paintings_never_reach_the_training_batches(tmp_path, tiny_config):
    """Each painting is one flat colour; no batch of either data path carries a held-out one."""
    root = tmp_path / "data"
    write_images(root / "photo_jpg", 8, size=(32, 32))
    levels = list(range(10, 250, 24))  # ten paintings, ten grey levels
    for i, level in enumerate(levels):
        (root / "monet_jpg").mkdir(parents=True, exist_ok=True)
        from PIL import Image
        Image.new("RGB", (32, 32), (level,) * 3).save(root / "monet_jpg" / f"m{i}.png")
    config = tiny_config.replace(holdout_paintings=4, batch_size=2)
    dataset = build_dataset(config, root)
    assert len(dataset.monet_paths) == 6 and len(dataset.holdout_paths) == 4
    assert not set(dataset.monet_paths) & set(dataset.holdout_paths)
    held_levels = {levels[int(p.stem[1:])] for p in dataset.holdout_paths}
    for data_path in ("memory", "loader"):
        loader = make_train_loader(config, dataset, data_path)
        seen = set()
        for epoch in range(6):
            loader.set_epoch(epoch)
            for _, monet in loader:
                seen |= {round((m.mean().item() + 1) * 127.5) for m in monet}
        assert seen and not any(abs(s - h) <= 2 for s in seen for h in held_levels), data_path
        assert len(seen) >= 4  # the training paintings do come through


def test_the_held_out_choice_is_fixed_and_independent_of_the_seed(tmp_path):
    paths = [tmp_path / f"{i}.jpg" for i in range(300)]
    train, held = split_paintings(paths, 30)
    assert len(held) == 30 and len(train) == 270 and sorted(train + held) == sorted(paths)
    assert split_paintings(paths, 30) == (train, held)
    assert split_paintings(paths, 0) == (paths, [])


# Time budget


class Clock:
    def __init__(self):
        self.now = 1000.0

    def advance(self, seconds):
        self.now += seconds

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def a_session_that_starts_with_the_test(monkeypatch):
    """time_budget_hours counts from the session's start: here, the test's, not pytest's."""
    monkeypatch.setenv(SESSION_STARTED_ENV, str(time.monotonic()))


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The training loop's time, and a session that starts at it."""
    from monet_utils import training
    clock = Clock()
    monkeypatch.setattr(training.time, "monotonic", clock)
    monkeypatch.setattr(training.time, "perf_counter", clock)
    monkeypatch.setenv(SESSION_STARTED_ENV, str(clock.now))
    return clock


def test_the_plan_fits_the_budget_with_constant_then_decaying_epochs():
    plan = plan_schedule(budget_hours=2, reserve_minutes=20, sessions=1, step_seconds=0.5, steps_per_epoch=1000,
                         steps_done=20, seconds_done=30)
    assert plan.epochs * 1000 * 0.5 <= (2 * 3600 - 20 * 60) - 30 + 20 * 0.5
    assert plan.train_seconds <= 2 * 3600 - 20 * 60
    assert (plan.epochs + 1) * 1000 * 0.5 > 0.9 * (2 * 3600 - 20 * 60)  # and uses most of it
    assert plan.decay_epochs == plan.epochs // 2 and plan.max_steps == 0
    two = plan_schedule(2, 20, 2, 0.5, 1000, 20, 30)
    assert two.epochs >= 2 * plan.epochs
    short = plan_schedule(0.5, 20, 1, 2.0, 1000)  # 10 minutes: 285 steps, under one epoch
    assert (short.epochs, short.decay_epochs) == (1, 0) and short.max_steps == int(600 * 0.95 // 2.0)


def test_a_time_budget_plans_the_run_and_it_ends_inside_the_budget(tiny_config, monkeypatch, capsys, clock):
    config = tiny_config.replace(epochs=0, time_budget_hours=1.0, reserve_minutes=10.0, checkpoint_every=10_000)
    trainer = CycleGANTrainer(config)
    seen = record_lr_per_step(trainer, monkeypatch, seconds_per_step=3.0, clock=clock)
    start = clock.now
    trainer.fit(BatchesOf(steps_per_epoch=50), progress=False)
    # 50 min of training at 3 s/step, 95% of it planned: 950 steps = 19 epochs of 50
    assert (trainer.config.epochs, trainer.config.decay_epochs) == (19, 9)
    assert trainer.step == 19 * 50 and not trainer.out_of_time
    assert clock.now - start <= 50 * 60  # training is over before the reserve begins
    assert "19 epochs (10 constant + 9 decaying)" in capsys.readouterr().out
    expected = reference_lrs(10, 9, config.lr)
    assert [lr for _, lr, _ in seen[::50]] == pytest.approx(expected)  # the planned schedule, the reference's
    assert config.epochs == 0 and config.max_steps == 0  # the config given stays the caller's own, unplanned


@pytest.mark.parametrize("slows_down", [1.0, 1.5], ids=["steady-steps", "steps-50%-slower-after-the-plan"])
def test_the_kaggle_notebooks_default_run_ends_within_kaggles_300_minutes(tiny_config, monkeypatch, capsys, clock,
                                                                          slows_down):
    """Kaggle takes images.zip only from a version that ran for at most 300 min. With 40 min of slow
    cells before training (installs, data, the model), the plan counts them; steps that slow down
    after it still stop at the deadline; the reserve for images.zip and the estimate comes after."""
    from monet_utils.kaggle_notebook import build_kaggle_notebook
    from .test_kaggle_notebook import parameter_values
    kaggle = parameter_values(build_kaggle_notebook())
    budget, reserve = kaggle["time_budget_hours"], kaggle["reserve_minutes"]
    assert kaggle["epochs"] == 0 and budget * 60 <= 300 - 15  # the margin for Kaggle's clock outside the kernel
    session_start = clock.now
    clock.advance(40 * 60)
    trainer = CycleGANTrainer(tiny_config.replace(epochs=0, time_budget_hours=budget, reserve_minutes=reserve,
                                                  checkpoint_every=10 ** 6))
    record_lr_per_step(trainer, monkeypatch, lambda n: 3.0 if n < 20 else 3.0 * slows_down, clock)
    trainer.fit(BatchesOf(steps_per_epoch=100), progress=False)
    plan = trainer.plan
    assert plan.setup_seconds == 40 * 60
    assert (plan.setup_seconds + plan.train_seconds) / 60 + reserve <= budget * 60  # the planned end
    assert plan.epochs >= 0.9 * (budget * 3600 - reserve * 60 - 40 * 60) * 0.95 / 3.0 / 100 - 1  # and most of it
    trained_until = (clock.now - session_start) / 60
    assert trained_until <= budget * 60 - reserve + 3.0 * slows_down / 60  # the deadline, or the step across it
    assert trainer.out_of_time == (slows_down > 1)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Time plan"))
    assert f"after 40 min of set-up; the run ends about {(plan.setup_seconds + plan.train_seconds) / 60 + reserve:.0f} min" \
           f" after it started, {reserve:g} min of them kept for images.zip and the estimate, within its " \
           f"{budget * 60:g} min" in line


def test_resume_from_auto_goes_on_from_the_one_checkpoint_among_kaggles_inputs(tiny_config, tmp_path, monkeypatch,
                                                                             capsys):
    from monet_utils import kaggle_inputs
    from monet_utils.checkpoints import CheckpointError
    monkeypatch.setattr(kaggle_inputs, "KAGGLE_INPUT", tmp_path / "input")
    config = tiny_config.replace(resume_from="auto", epochs=3, output_dir=str(tmp_path / "working"))
    fresh = CycleGANTrainer(config)
    fresh.fit(BatchesOf(steps_per_epoch=2), progress=False)
    assert fresh.step == 6 and "no checkpoint among the attached inputs, so training starts afresh" in \
        capsys.readouterr().out
    previous = CycleGANTrainer(tiny_config.replace(output_dir=str(tmp_path / "input" / "notebooks" / "me" / "run")))
    previous.fit(BatchesOf(steps_per_epoch=2), progress=False)  # 1 epoch, its output attached
    second = CycleGANTrainer(config.replace(output_dir=str(tmp_path / "session2")))
    second.fit(BatchesOf(steps_per_epoch=2), progress=False)
    assert second.step == 6 and f"Resuming from {previous.checkpoint_path}: step 2" in capsys.readouterr().out
    CycleGANTrainer(tiny_config.replace(output_dir=str(tmp_path / "input" / "other"))).save()
    with pytest.raises(CheckpointError, match="resume_from = 'auto' found 2 checkpoints among the inputs .*other.*: "
                                              "set resume_from to the one to go on from"):
        CycleGANTrainer(config.replace(output_dir=str(tmp_path / "session3"))).resume()


def test_epochs_given_with_a_time_budget_are_kept_and_the_budget_is_a_deadline(tiny_config, monkeypatch, capsys, clock):
    trainer = CycleGANTrainer(tiny_config.replace(epochs=3, time_budget_hours=1.0, reserve_minutes=10.0))
    record_lr_per_step(trainer, monkeypatch, seconds_per_step=3.0, clock=clock)
    trainer.fit(BatchesOf(steps_per_epoch=50), progress=False)
    assert trainer.plan is None and trainer.config.epochs == 3 and trainer.step == 150  # 7.5 min: no deadline
    monkeypatch.setenv(SESSION_STARTED_ENV, str(clock.now))  # another session
    slow = CycleGANTrainer(tiny_config.replace(epochs=3, time_budget_hours=1.0, reserve_minutes=10.0,
                                               output_dir=str(tiny_config.output_dir) + "_slow"))
    record_lr_per_step(slow, monkeypatch, seconds_per_step=30.0, clock=clock)
    slow.fit(BatchesOf(steps_per_epoch=50), progress=False)
    assert slow.out_of_time and slow.step == 100 and slow.config.epochs == 3  # 50 min at 30 s/step
    assert "Time budget spent: stopped at step 100 of 150" in capsys.readouterr().out


def test_zero_epochs_need_a_time_budget():
    with pytest.raises(ConfigError, match="'epochs' is 0.*set 'time_budget_hours'"):
        CycleGANConfig(epochs=0)


def test_a_step_limit_given_with_a_time_budget_stays_a_limit(tiny_config, monkeypatch):
    trainer = CycleGANTrainer(tiny_config.replace(epochs=0, time_budget_hours=1.0, reserve_minutes=10.0, max_steps=30))
    record_lr_per_step(trainer, monkeypatch)
    trainer.fit(BatchesOf(steps_per_epoch=25), progress=False)
    assert trainer.step == 30 and trainer.plan.epochs > 2  # planned, but stopped where asked


def test_a_slower_session_stops_at_its_deadline_and_resume_from_goes_on(tiny_config, monkeypatch, tmp_path, capsys, clock):
    config = tiny_config.replace(epochs=0, time_budget_hours=1.0, reserve_minutes=10.0, budget_sessions=2,
                                 checkpoint_every=10_000)
    first = CycleGANTrainer(config)
    record_lr_per_step(first, monkeypatch, seconds_per_step=3.0, clock=clock)
    first.fit(BatchesOf(steps_per_epoch=50), progress=False)
    planned = (first.config.epochs, first.config.decay_epochs)
    assert planned == (38, 19) and first.out_of_time and first.step == 1000  # 50 min at 3 s/step
    assert "set resume_from to this run's" in capsys.readouterr().out

    monkeypatch.setenv(SESSION_STARTED_ENV, str(clock.now))  # the next session
    second_config = tiny_config.replace(time_budget_hours=1.0, reserve_minutes=10.0,
                                        output_dir=str(tmp_path / "session2"), resume_from=str(first.checkpoint_path))
    second = CycleGANTrainer(second_config)
    seen = record_lr_per_step(second, monkeypatch, seconds_per_step=3.0, clock=clock)
    second.fit(BatchesOf(steps_per_epoch=50), progress=False)
    assert (second.config.epochs, second.config.decay_epochs) == planned  # the schedule goes on, not re-planned
    assert seen[0][0] == 20 and second.step == 1900 and not second.out_of_time
    expected = reference_lrs(19, 19, config.lr)
    assert [lr for _, lr, _ in seen[::50]] == pytest.approx(expected[20:])
    assert "Resuming from" in capsys.readouterr().out


def test_resume_from_continues_weights_optimizers_and_schedule(tiny_config, dataset_dir, tmp_path):
    from monet_utils.data import build_dataset as build
    config = tiny_config.replace(epochs=4, decay_epochs=2, seed=3)
    dataset = build(config, dataset_dir)
    straight = CycleGANTrainer(config.replace(output_dir=str(tmp_path / "straight")))
    straight.fit(straight.train_loader(dataset), progress=False)

    first = CycleGANTrainer(config.replace(output_dir=str(tmp_path / "a"), max_steps=6))
    first.fit(first.train_loader(dataset), progress=False)
    second = CycleGANTrainer(config.replace(output_dir=str(tmp_path / "b"), resume_from=str(first.checkpoint_path)))
    second.fit(second.train_loader(dataset), progress=False)
    assert second.step == straight.step == 12
    for name, net in straight.model.networks.items():
        for a, b in zip(net.state_dict().values(), second.model.networks[name].state_dict().values()):
            assert torch.equal(a, b), name
    assert second.model.opt_G.param_groups[0]["lr"] == straight.model.opt_G.param_groups[0]["lr"]


def test_a_missing_resume_from_is_named(tiny_config, tmp_path):
    from monet_utils.checkpoints import CheckpointError
    trainer = CycleGANTrainer(tiny_config.replace(resume_from=str(tmp_path / "previous" / "latest.pt")))
    with pytest.raises(CheckpointError, match="resume_from checkpoint .*previous/latest.pt does not exist"):
        trainer.fit(BatchesOf(1), progress=False)


@pytest.mark.parametrize("values, message", [
    (dict(time_budget_hours=0.25, reserve_minutes=15.0), "'reserve_minutes' \\(15.0\\) leaves no training time"),
    (dict(budget_sessions=0), "'budget_sessions' must be >= 1"),
    (dict(upsampling="pixelshuffle"), "'upsampling' must be one of"),
    (dict(holdout_paintings=-1), "'holdout_paintings' must be >= 0"),
])
def test_recipe_settings_out_of_range_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        CycleGANConfig(**values)


# The authors' DiffAugment_pytorch.py (mit-han-lab/data-efficient-gans), transcribed: the reference
# each transform is checked against, draw for draw from the same seed.
def authors_brightness(x):
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def authors_saturation(x):
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + x_mean


def authors_contrast(x):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + x_mean


def authors_translation(x, ratio=0.125):
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0)), torch.arange(x.size(2)),
                                                torch.arange(x.size(3)), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = torch.nn.functional.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def authors_cutout(x, ratio=0.5):
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0)), torch.arange(cutout_size[0]),
                                                torch.arange(cutout_size[1]), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


@pytest.mark.parametrize("policy, authors", [
    ("color", (authors_brightness, authors_saturation, authors_contrast)),
    ("translation", (authors_translation,)),
    ("cutout", (authors_cutout,)),
])
def test_diffaugment_is_the_authors_transform_draw_for_draw(policy, authors):
    images = torch.rand(16, 3, 24, 40) * 2 - 1  # not square: height and width must not be swapped
    torch.manual_seed(7)
    ours = diff_augment(images, policy)
    torch.manual_seed(7)
    expected = images
    for transform in authors:
        expected = transform(expected)
    assert torch.equal(ours, expected)


def test_diffaugment_strengths_are_the_papers():
    """Brightness +-0.5, saturation x[0, 2), contrast x[0.5, 1.5), shifts up to 1/8 of each side."""
    from monet_utils import diffaugment
    constant = torch.zeros(2000, 3, 1, 1)
    offsets = diffaugment.brightness(constant).flatten()
    assert -0.5 <= offsets.min() < -0.45 and 0.45 < offsets.max() < 0.5
    images = torch.zeros(400, 1, 16, 32)
    images[:, :, 8, 16] = 1  # one lit pixel: where it lands is the shift
    moved = diffaugment.translation(images).flatten(1).argmax(1)
    rows, cols = moved // 32 - 8, moved % 32 - 16
    assert rows.abs().max() == 2 and cols.abs().max() == 4  # 16/8 and 32/8
