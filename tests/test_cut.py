"""CUT and FastCUT (cut.py) against hand computations: PatchNCE, the patch sampling, the layers
it reads, flip equivariance, one whole step, and checkpoints kept apart from CycleGAN's."""
import copy
import json
import math
import zipfile

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monet_utils import runner
from monet_utils.__main__ import main
from monet_utils.checkpoints import CheckpointError, load_generator, read_checkpoint
from monet_utils.config import ConfigError
from monet_utils.cut import NCE_LAYERS, NCE_TEMPERATURE, CUT, PatchSampler, patch_nce_loss
from monet_utils.models import BlurDownsample, BlurUpsample, PatchDiscriminator, ResnetBlock, ResnetGenerator
from monet_utils.data import build_dataset
from monet_utils.stylize import stylize
from monet_utils.submission import check_submission_zip
from monet_utils.training import CycleGANTrainer

from .test_training import weights

RECIPE_LOSSES = {"cut": ("G_GAN", "NCE", "NCE_Y", "D_real", "D_fake", "D"),
                 "fastcut": ("G_GAN", "NCE", "D_real", "D_fake", "D")}


@pytest.fixture
def cut_config(tiny_config):
    return tiny_config.replace(model="cut", n_res_blocks=5)


def hand_patch_nce(query, key, images, temperature=NCE_TEMPERATURE):
    """The reference's PatchNCELoss, one patch at a time: -log softmax of the positive among
    [positive, every key of the same image, its own position's replaced by -10]."""
    patches = len(query) // images
    losses = []
    for b in range(images):
        for i in range(patches):
            q = query[b * patches + i]
            logits = [float(q @ key[b * patches + i])]
            logits += [-10.0 if j == i else float(q @ key[b * patches + j]) for j in range(patches)]
            scaled = [v / temperature for v in logits]
            losses.append(-scaled[0] + math.log(sum(math.exp(v) for v in scaled)))
    return torch.tensor(losses)


def normalised(*shape, seed=0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def test_patch_nce_is_the_cross_entropy_of_the_positive_on_the_diagonal():
    query, key = normalised(2 * 5, 8, seed=1), normalised(2 * 5, 8, seed=2)
    torch.testing.assert_close(patch_nce_loss(query, key, images=2), hand_patch_nce(query, key, 2), rtol=1e-5, atol=1e-5)
    # A query equal to its key, far from the others: near-zero loss; the temperature sharpens it.
    assert patch_nce_loss(key, key, images=2).mean() < patch_nce_loss(query, key, images=2).mean()
    torch.testing.assert_close(patch_nce_loss(query, key, 2, temperature=0.5), hand_patch_nce(query, key, 2, 0.5),
                               rtol=1e-5, atol=1e-5)


def test_patch_nce_takes_negatives_from_the_same_image_only_and_no_gradient_into_the_keys():
    query, key = normalised(2 * 4, 6, seed=3).requires_grad_(), normalised(2 * 4, 6, seed=4).requires_grad_()
    other = key.detach().clone()
    other[4:] = normalised(4, 6, seed=5)  # the second image's keys changed
    first, changed = patch_nce_loss(query, key, 2), patch_nce_loss(query, other, 2)
    torch.testing.assert_close(first[:4], changed[:4])
    assert not torch.allclose(first[4:], changed[4:])
    first.sum().backward()
    assert key.grad is None and query.grad.abs().sum() > 0


def test_the_sampler_takes_the_same_positions_in_every_image_and_from_the_source_for_the_translation():
    sampler = PatchSampler([2, 2], width=4)
    sampler.mlps = nn.ModuleList([nn.Identity(), nn.Identity()])  # what is sampled, as it is
    height = width = 6
    where = torch.arange(height * width, dtype=torch.float).view(1, 1, height, width)
    # Channel 0 holds the position (plus 100 in the second image), channel 1 is 1: position = ratio.
    features = [torch.cat([torch.cat([where, torch.ones_like(where)], 1),
                           torch.cat([where + 100, torch.ones_like(where)], 1)]) for _ in range(2)]
    torch.manual_seed(0)
    samples, positions = sampler(features, patches=10)
    assert [len(p) for p in positions] == [10, 10] and len(set(positions[0].tolist())) == 10
    for sample, chosen in zip(samples, positions):
        read = sample[:, 0] / sample[:, 1]
        torch.testing.assert_close(read[:10], chosen.float())
        torch.testing.assert_close(read[10:], chosen.float() + 100)  # the same places in image 2
    torch.testing.assert_close(sample.norm(dim=1), torch.ones(20))
    again, reused = sampler([f * 3 for f in features], patches=10, positions=positions)
    assert all(torch.equal(a, b) for a, b in zip(reused, positions))
    torch.testing.assert_close(again[0], samples[0])  # normalised: the scale drops out
    all_of_them, _ = sampler(features, patches=1000)  # more than the map has: every position, once
    assert len(all_of_them[0]) == 2 * height * width


def test_nce_reads_the_reference_layers_of_the_antialiased_encoder():
    torch.manual_seed(0)
    generator = ResnetGenerator(ngf=4, n_res_blocks=9, antialias=True)
    image = torch.randn(2, 3, 32, 32)
    features = generator.features(image, NCE_LAYERS)
    blocks = [layer for layer in generator.model if isinstance(layer, ResnetBlock)]
    assert generator.model[NCE_LAYERS[3]] is blocks[0] and generator.model[NCE_LAYERS[4]] is blocks[4]
    kinds = [type(generator.model[i]) for i in NCE_LAYERS]
    assert kinds == [nn.ReflectionPad2d, nn.Conv2d, nn.Conv2d, ResnetBlock, ResnetBlock]
    assert [tuple(f.shape[1:]) for f in features] == [(3, 38, 38), (8, 32, 32), (16, 16, 16), (16, 8, 8), (16, 8, 8)]
    x, expected = image, []
    for index, layer in enumerate(generator.model):
        x = layer(x)
        if index in NCE_LAYERS:
            expected.append(x)
    assert all(torch.equal(a, b) for a, b in zip(features, expected))
    assert generator(image).shape == image.shape


def test_blur_resampling_is_the_binomial_filter_and_keeps_a_constant():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    down = BlurDownsample(1)(x)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    tap = torch.tensor([1.0, 2.0, 1.0])
    assert down[0, 0, 1, 2] == pytest.approx(float((padded[0, 0, 2:5, 4:7] * torch.outer(tap, tap)).sum() / 16))
    constant = torch.full((1, 2, 8, 8), 0.3)
    torch.testing.assert_close(BlurDownsample(2)(constant), torch.full((1, 2, 4, 4), 0.3))
    torch.testing.assert_close(BlurUpsample(2)(constant), torch.full((1, 2, 16, 16), 0.3))
    x = torch.randn(2, 3, 5, 7)  # the edge repeated by indexing is replicate padding
    reference = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), BlurUpsample(3).kernel, stride=2,
                                   padding=2, groups=3)[..., 1:-1, 1:-1]
    torch.testing.assert_close(BlurUpsample(3)(x), reference)
    up = BlurUpsample(1)(torch.eye(4).view(1, 1, 4, 4))
    assert up.shape == (1, 1, 8, 8) and up.sum() == pytest.approx(4 * 4, rel=1e-5)


def test_the_antialiased_discriminator_keeps_the_patch_map_size():
    plain, blurred = PatchDiscriminator(ndf=4), PatchDiscriminator(ndf=4, antialias=True)
    image = torch.randn(1, 3, 64, 64)
    assert blurred(image).shape == plain(image).shape
    assert sum(isinstance(m, BlurDownsample) for m in blurred.modules()) == 3


def test_the_model_choices_pick_the_references_recipe_and_antialiasing(cut_config):
    cut = CUT(cut_config, torch.device("cpu"), CycleGANTrainer(cut_config).speed)
    fast = CUT(cut_config.replace(model="fastcut"), torch.device("cpu"), cut.speed)
    assert (cut.recipe.nce_lambda, cut.recipe.identity_nce, cut.recipe.flip_equivariance) == (1.0, True, False)
    assert (fast.recipe.nce_lambda, fast.recipe.identity_nce, fast.recipe.flip_equivariance) == (10.0, False, True)
    assert "NCE_Y" in cut.loss_names and "NCE_Y" not in fast.loss_names
    assert any(isinstance(m, BlurDownsample) for m in cut.G_photo2monet.modules())
    assert cut_config.antialiased and not cut_config.replace(model="cyclegan").antialiased
    assert not cut_config.replace(antialias="off").antialiased
    assert [m.in_features for m in (mlp[0] for mlp in cut.F_patches.mlps)] == [3, 8, 16, 16, 16]


@pytest.mark.parametrize("change, message", [(dict(generator="unet"), "needs generator='resnet'"),
                                             (dict(n_res_blocks=4), "needs 'n_res_blocks' >= 5"),
                                             (dict(model="cyclegans"), "'model' must be one of")])
def test_a_cut_config_it_cannot_train_is_named(cut_config, change, message):
    with pytest.raises(ConfigError, match=message):
        cut_config.replace(**change)


def reference_step(model, photo, monet):
    """The reference's optimize_parameters, written out with separate Adams for D, G and F (the
    reference's optimizer_F), a loop PatchNCE, and the reference's draws (the flip, then one
    randperm per layer, source first) from a copy of the model's generator of draws. Returns the
    losses, the networks after the step, and whether it flipped."""
    cfg, recipe = model.config, model.recipe
    draws = torch.Generator()
    draws.set_state(model.draws.get_state())
    flipped = recipe.flip_equivariance and bool(torch.rand((), generator=draws) < 0.5)
    G, D, sampler = (copy.deepcopy(n) for n in (model.G_photo2monet, model.D_monet, model.F_patches))
    adam = lambda params: torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))  # noqa: E731
    opt_G, opt_D, opt_F = adam(G.parameters()), adam(D.parameters()), adam(sampler.parameters())
    real = torch.cat([photo, monet]) if recipe.identity_nce else photo
    fake = G(real.flip(3) if flipped else real)
    fake_monet, idt = fake[:len(photo)], fake[len(photo):]
    D_fake = ((D(fake_monet.detach()) - 0) ** 2).mean()
    D_real = ((D(monet) - 1) ** 2).mean()
    opt_D.zero_grad()
    (0.5 * (D_fake + D_real)).backward()
    opt_D.step()

    def nce(source, translation):
        queries = G.features(translation, NCE_LAYERS)
        queries = [q.flip(3) for q in queries] if flipped else queries
        total = 0.0
        for layer, (q_map, k_map) in enumerate(zip(queries, G.features(source, NCE_LAYERS))):
            where = torch.randperm(k_map.shape[2] * k_map.shape[3], generator=draws)[:256]
            pick = lambda m: m.flatten(2)[:, :, where].permute(0, 2, 1).reshape(-1, m.shape[1])  # noqa: E731
            mlp = sampler.mlps[layer]
            # The reference's Normalize, whose pow(0.5) has a NaN gradient at a zero vector (a tiny
            # encoder's features have some); the norm's gradient there is 0.
            unit = lambda x: x / (x.norm(dim=1, keepdim=True) + 1e-7)  # noqa: E731
            k, q = unit(mlp(pick(k_map))), unit(mlp(pick(q_map)))
            logits = [torch.cat([(qi * ki).sum().view(1), torch.where(torch.arange(len(where)) == i, -10.0,
                                                                          k.detach().view(len(source), -1, k.shape[1])[b] @ qi)])
                      for b in range(len(source))
                      for i, (qi, ki) in enumerate(zip(q.view(len(source), -1, q.shape[1])[b],
                                                       k.detach().view(len(source), -1, k.shape[1])[b]))]
            total = total + torch.stack([-(row / NCE_TEMPERATURE).log_softmax(0)[0] for row in logits]).mean()
        return total / len(NCE_LAYERS) * recipe.nce_lambda

    D.requires_grad_(False)
    G_GAN = ((D(fake_monet) - 1) ** 2).mean()
    losses = {"G_GAN": G_GAN, "NCE": nce(photo, fake_monet), "D_real": D_real, "D_fake": D_fake}
    nce_total = losses["NCE"]
    if recipe.identity_nce:
        losses["NCE_Y"] = nce(monet, idt)
        nce_total = 0.5 * (losses["NCE"] + losses["NCE_Y"])
    opt_G.zero_grad()
    opt_F.zero_grad()
    (G_GAN + nce_total).backward()
    opt_G.step()
    opt_F.step()
    return {k: float(v.detach()) for k, v in losses.items()}, (G, D, sampler), flipped


@pytest.mark.parametrize("model_name, flipped", [("cut", False), ("fastcut", False), ("fastcut", True)])
def test_one_step_is_the_reference_step(cut_config, model_name, flipped):
    config = cut_config.replace(model=model_name, batch_size=2)
    model = CycleGANTrainer(config).model
    photo, monet = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (1, 2))
    seed = 0  # the first seed whose first draw flips as this case asks
    while model.recipe.flip_equivariance and (torch.rand((), generator=torch.Generator().manual_seed(seed)) < 0.5) != flipped:
        seed += 1
    model.draws.manual_seed(seed)
    expected, networks, reference_flipped = reference_step(model, photo, monet)
    assert reference_flipped == flipped
    losses = model.train_step(photo, monet)
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert losses["D"] == pytest.approx(0.5 * (expected["D_real"] + expected["D_fake"]), rel=1e-5)
    for ours, theirs in zip((model.G_photo2monet, model.D_monet, model.F_patches), networks):
        scale = max(float(b.grad.abs().max()) for b in theirs.parameters())  # the network's largest
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"{name}: {m}")
            # Adam's first step moves each weight by lr times the sign of its gradient; a gradient of
            # rounding noise (a conv bias before InstanceNorm) has no sign to agree on.
            clear = b.grad.abs() > 1e-3 * scale
            torch.testing.assert_close(a[clear], b[clear], rtol=0, atol=1e-6, msg=name)


def test_flip_equivariance_compares_the_flipped_translations_features_flipped_back(cut_config):
    model = CycleGANTrainer(cut_config.replace(model="fastcut")).model
    source = torch.rand(2, 3, 32, 32) * 2 - 1
    translation = model.G_photo2monet(source.flip(3))
    model.draws.manual_seed(3)
    flipped = float(model.nce_loss(source, translation, flipped=True))
    # The same as comparing with a translation whose features are already in the source's orientation.
    G = model.G_photo2monet
    keys, positions = model.F_patches(G.features(source, NCE_LAYERS), generator=torch.Generator().manual_seed(3))
    queries, _ = model.F_patches([f.flip(3) for f in G.features(translation, NCE_LAYERS)], positions=positions)
    by_hand = sum(hand_patch_nce(q.detach(), k.detach(), 2).mean() for q, k in zip(queries, keys)) / 5 * 10
    assert flipped == pytest.approx(float(by_hand), rel=1e-4)
    model.draws.manual_seed(3)
    assert float(model.nce_loss(source, translation, flipped=False)) != pytest.approx(flipped, rel=1e-3)


def test_a_non_finite_discriminator_loss_changes_no_weight(cut_config):
    model = CycleGANTrainer(cut_config).model
    before = {k: v.clone() for net in model.networks.values() for k, v in net.state_dict().items()}
    photo = torch.zeros(2, 3, 32, 32)
    losses = model.train_step(photo, torch.full((2, 3, 32, 32), float("nan")))
    assert math.isnan(losses["D_real"]) and model.skipped_in_a_row == 1
    after = {k: v for net in model.networks.values() for k, v in net.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("fused", [False, True])
def test_with_fp16_a_non_finite_generator_loss_keeps_the_discriminators_update_and_backs_off(cut_config, monkeypatch,
                                                                                            fused):
    """The discriminator steps first, as in the reference: a generator loss that is not finite
    then skips the generator's and the MLPs' update only. The CPU's GradScaler stands in for a
    T4's fp16 one (the same unscale, skip and update logic)."""
    model = CycleGANTrainer(cut_config.replace(fused_adam="on" if fused else "off")).model
    model.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    photo, monet = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    losses = model.train_step(photo, monet)
    assert all(math.isfinite(v) for v in losses.values()) and model.scaler.get_scale() == 2.0 ** 10
    before = {name: copy.deepcopy(net.state_dict()) for name, net in model.networks.items()}
    nce = model.nce_loss
    monkeypatch.setattr(model, "nce_loss", lambda *args: nce(*args) * float("inf"))
    losses = model.train_step(photo, monet)
    assert math.isinf(losses["NCE"]) and math.isfinite(losses["D"])
    assert model.skipped_in_a_row == model.skipped_total == 1 and model.scaler.get_scale() == 2.0 ** 9
    changed = {name: any(not torch.equal(before[name][k], v) for k, v in net.state_dict().items())
               for name, net in model.networks.items()}
    assert changed == {"G_photo2monet": False, "D_monet": True, "F_patches": False}


@pytest.mark.parametrize("saved, resumed", [("cyclegan", "cut"), ("cut", "cyclegan"), ("cut", "fastcut")])
def test_a_checkpoint_of_one_model_is_refused_by_another_in_one_line(cut_config, saved, resumed):
    config = cut_config.replace(model=saved)
    path = CycleGANTrainer(config).save()
    trainer = CycleGANTrainer(config.replace(model=resumed))
    with pytest.raises(CheckpointError, match=rf"holds a '{saved}' model, and this config trains model='{resumed}'"):
        trainer.load(path)


def test_a_cut_checkpoint_has_no_generator_back_and_says_so(cut_config):
    path = CycleGANTrainer(cut_config).save()
    generator, config = load_generator(path)
    assert config.model == "cut" and isinstance(generator, ResnetGenerator)
    with pytest.raises(CheckpointError, match="holds no G_monet2photo generator"):
        load_generator(path, direction="monet2photo")


@pytest.mark.parametrize("model_name", ["cut", "fastcut"])
def test_resume_gives_the_same_weights_as_one_straight_run(cut_config, dataset_dir, tmp_path, model_name):
    """7 steps straight vs 4, then a new trainer from the checkpoint for 3 more: the patch draws
    and FastCUT's flips come from the random state the checkpoint restores."""
    def run(config):
        trainer = CycleGANTrainer(config)
        trainer.fit(trainer.train_loader(build_dataset(config, dataset_dir)), progress=False)
        return trainer

    base = cut_config.replace(model=model_name, epochs=3, decay_epochs=2, diffaugment="color,translation")
    straight = run(base.replace(max_steps=7, output_dir=str(tmp_path / "straight")))
    run(base.replace(max_steps=4, output_dir=str(tmp_path / "split")))
    resumed = run(base.replace(max_steps=7, output_dir=str(tmp_path / "split")))
    assert resumed.step == straight.step == 7
    assert resumed.history == straight.history
    a, b = weights(straight), weights(resumed)
    assert set(a) == {k for k in a if k.split(".")[0] in ("G_photo2monet", "D_monet", "F_patches")}
    assert all(torch.equal(a[k], b[k]) for k in a)
    for group_a, group_b in zip(straight.model.opt_G.param_groups, resumed.model.opt_G.param_groups):
        assert group_a["lr"] == group_b["lr"] < cut_config.lr  # F's group decays with G's


@pytest.mark.parametrize("model_name", ["cut", "fastcut"])
def test_the_notebook_trains_evaluates_resumes_and_submits_with_cut(tmp_path, dataset_dir, feature_network,
                                                                    model_name, capsys):
    out = tmp_path / "run"
    parameters = dict(model=model_name, image_size=32, ngf=4, ndf=4, n_res_blocks=5, batch_size=2, num_workers=0,
                      n_samples=2, epochs=3, max_steps=2, eval_every=1, eval_photos=4, fid_weights=str(feature_network),
                      data_dir=str(dataset_dir), estimate_mifid=False)
    runner.run_notebook(parameters, out)
    first = read_checkpoint(out / "checkpoints" / "latest.pt")
    assert set(first["networks"]) == {"G_photo2monet", "D_monet", "F_patches"} and first["step"] == 2
    executed = runner.run_notebook({**parameters, "max_steps": 4}, out)  # resumes: two steps more
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and set(metrics["final"]) == set(RECIPE_LOSSES[model_name])
    assert [e["step"] for e in metrics["evaluations"]] == [2, 3, 4]  # epoch ends (3 steps) and the end
    assert read_checkpoint(out / "checkpoints" / "best.pt")["evaluation"]["step"] in (2, 3, 4)
    outputs = "".join(str(o) for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", []))
    assert "Resuming from" in outputs and "Monet -> Monet" not in outputs  # titles are drawn, not printed
    assert check_submission_zip(out / "images.zip", competition=False).n_images == 6
    for name in ("samples.png", "losses.png", "samples/step_4.png"):
        assert (out / name).stat().st_size > 0, name

    assert main(["export", "--checkpoint", str(out / "checkpoints" / "latest.pt"), "--format", "torchscript",
                 "--output", str(tmp_path / "g.pt")]) == 0
    generator, _ = load_generator(out / "checkpoints" / "latest.pt")
    exported = torch.jit.load(tmp_path / "g.pt")
    photo = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(exported(photo), generator(photo), rtol=1e-4, atol=1e-5)
    zipped = stylize(tmp_path / "g.pt", dataset_dir / "photo_jpg", tmp_path / "styled.zip", size=32, progress=False)
    with zipfile.ZipFile(zipped) as styled:
        assert len(styled.namelist()) == 6
