"""ema_decay: a moving average of the generators' weights, which translations use; training unchanged."""
import pytest
import torch

from monet_utils import evaluation
from monet_utils.checkpoints import load_generator, read_checkpoint
from monet_utils.config import ConfigError, CycleGANConfig
from monet_utils.data import build_dataset
from monet_utils.training import CycleGANTrainer

from .test_training import fixed_batch


def parameters(net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def fit(config, dataset_dir, evaluate=False) -> CycleGANTrainer:
    trainer = CycleGANTrainer(config)
    dataset = build_dataset(config, dataset_dir)
    evaluator = evaluation.Evaluator.for_run(trainer.config, dataset, trainer.device) if evaluate else None
    trainer.fit(trainer.train_loader(dataset), progress=False, evaluator=evaluator)
    return trainer


def test_the_average_follows_the_warmed_up_decay_and_training_is_unchanged(tiny_config):
    """decay 0.2: the second update's decay is the warm-up's (1 + 1) / (10 + 1) = 0.18, later ones
    the cap, 0.2; the first update copies the weights."""
    plain, averaged = CycleGANTrainer(tiny_config), CycleGANTrainer(tiny_config.replace(ema_decay=0.2))
    expected = None
    for step in range(4):
        photo, monet = fixed_batch(seed=step)
        assert plain.model.train_step(photo, monet) == averaged.model.train_step(photo, monet)
        current = parameters(averaged.model.G_photo2monet)
        decay = min(0.2, (1 + step) / (10 + step))
        expected = current if expected is None else [decay * a + (1 - decay) * w for a, w in zip(expected, current)]
    for name in ("G_photo2monet", "G_monet2photo", "D_monet", "D_photo"):  # the training's own weights: identical
        assert all(torch.equal(a, b) for a, b in zip(parameters(plain.model.networks[name]),
                                                     parameters(averaged.model.networks[name])))
    average = averaged.model.averages["G_photo2monet"].module
    assert all(torch.allclose(a, e, atol=1e-7) for a, e in zip(parameters(average), expected))
    assert not all(torch.equal(a, w) for a, w in zip(parameters(average), current))
    assert set(averaged.model.averages) == {"G_photo2monet", "G_monet2photo"} and not plain.model.averages
    assert averaged.model.inference_generators == (average, averaged.model.averages["G_monet2photo"].module)
    assert plain.model.inference_generators == (plain.model.G_photo2monet, plain.model.G_monet2photo)


def test_evaluations_best_pt_and_the_submission_use_the_average(tiny_config, dataset_dir, feature_network,
                                                                  monkeypatch):
    scored = []
    translations = evaluation.Evaluator.translations
    monkeypatch.setattr(evaluation.Evaluator, "translations",
                        lambda self, generator: scored.append(generator) or translations(self, generator))
    config = tiny_config.replace(ema_decay=0.9, eval_every=1, epochs=2, fid_weights=str(feature_network),
                                 eval_photos=4, tensorboard_every=0, submit_from="latest")
    fids = iter([2.0, 1.0])  # the last evaluation is the best: best.pt holds the weights the run ends with
    monkeypatch.setattr(evaluation, "fid_scores", lambda *args, **kwargs: {"fid": (f := next(fids)), "mifid": f})
    trainer = fit(config, dataset_dir, evaluate=True)
    average = trainer.model.averages["G_photo2monet"].module
    assert len(scored) == 2 and all(generator is average for generator in scored)

    kept = read_checkpoint(trainer.best_path)["networks"]["G_photo2monet"]
    loaded, _ = load_generator(trainer.best_path, device="cpu")
    assert all(torch.equal(v, kept[k]) for k, v in loaded.state_dict().items())
    assert all(torch.equal(v, kept[k]) for k, v in average.state_dict().items())
    assert not all(torch.equal(v, kept[k]) for k, v in trainer.model.G_photo2monet.state_dict().items())
    assert trainer.submission_generator() is average


def test_a_resumed_run_keeps_averaging_as_one_straight_run(tiny_config, dataset_dir, tmp_path):
    base = tiny_config.replace(ema_decay=0.5, epochs=3)
    straight = fit(base.replace(max_steps=7, output_dir=str(tmp_path / "straight")), dataset_dir)
    fit(base.replace(max_steps=4, output_dir=str(tmp_path / "split")), dataset_dir)
    resumed = fit(base.replace(max_steps=7, output_dir=str(tmp_path / "split")), dataset_dir)
    for name, average in straight.model.averages.items():
        assert all(torch.equal(a, b) for a, b in zip(parameters(average.module),
                                                     parameters(resumed.model.averages[name].module)))
        assert int(resumed.model.averages[name].n_averaged) == int(average.n_averaged) == 7


def test_a_checkpoint_without_an_average_starts_one_from_its_weights(tiny_config, dataset_dir, tmp_path):
    plain = fit(tiny_config.replace(max_steps=3), dataset_dir)
    averaged = CycleGANTrainer(tiny_config.replace(ema_decay=0.9))
    averaged.load(plain.checkpoint_path)
    for name, average in averaged.model.averages.items():
        assert all(torch.equal(a, w) for a, w in zip(parameters(average.module), parameters(plain.model.networks[name])))
        assert int(average.n_averaged) == 1


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_a_decay_outside_0_to_1_is_named(decay):
    with pytest.raises(ConfigError, match=r"'ema_decay' must be in \[0, 1\)"):
        CycleGANConfig(ema_decay=decay)
