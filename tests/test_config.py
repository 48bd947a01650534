import json

import pytest

from monet_utils.config import ConfigError, CycleGANConfig


def test_defaults_are_the_seed_and_paper_values():
    c = CycleGANConfig()
    assert (c.batch_size, c.epochs, c.image_size, c.lr, c.beta1, c.beta2, c.cycle_lambda) == (
        4, 1, 256, 2e-4, 0.5, 0.999, 10.0)
    assert (c.identity_lambda, c.pool_size, c.gan_mode, c.init_gain) == (5.0, 50, "lsgan", 0.02)
    assert (c.ngf, c.ndf, c.n_res_blocks) == (64, 64, 9)


@pytest.mark.parametrize("key, value, fragment", [
    ("lr", -1e-4, "'lr'"),
    ("image_size", 250, "multiple of 4"),
    ("image_size", 28, "from 32 to 1024"),
    ("image_size", 100000, "from 32 to 1024, got 100000"),
    ("batch_size", 0, "'batch_size'"),
    ("epochs", 2.5, "'epochs' must be int"),
    ("gan_mode", "wgan", "'gan_mode'"),
    ("beta1", 1.0, "'beta1'"),
    ("cycle_lambda", -1.0, "'cycle_lambda'"),
    ("max_steps", -1, "'max_steps'"),
    ("device", "tpu", "'device'"),
    ("batch_size", True, "'batch_size' must be int"),
])
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        CycleGANConfig(**{key: value})


def test_decay_longer_than_training_is_rejected():
    with pytest.raises(ConfigError, match="decay_epochs"):
        CycleGANConfig(epochs=2, decay_epochs=3)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="cycle_lamda"):
        CycleGANConfig.from_dict({"cycle_lamda": 5})


def test_int_for_float_is_accepted_as_float():
    assert CycleGANConfig(cycle_lambda=5).cycle_lambda == 5.0
    assert isinstance(CycleGANConfig(lr=1).lr, float)


def test_save_load_round_trip(tmp_path):
    config = CycleGANConfig(epochs=3, cycle_lambda=5.0, image_size=64)
    config.save(tmp_path / "c.json")
    assert CycleGANConfig.load(tmp_path / "c.json") == config
    assert json.loads((tmp_path / "c.json").read_text())["epochs"] == 3


def test_load_of_a_broken_file_names_it(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ConfigError, match="c.json"):
        CycleGANConfig.load(tmp_path / "c.json")


def test_replace_validates():
    assert CycleGANConfig().replace(epochs=7).epochs == 7
    with pytest.raises(ConfigError):
        CycleGANConfig().replace(image_size=30)


def test_a_checkpoint_of_an_earlier_version_loads_when_its_retired_options_were_off(tmp_path):
    """Checkpoints and config.json files of last week's version name recipe options this one
    dropped: with the values that meant 'off' they load (a Kaggle session resuming, the submit
    notebook reading a previous session's best.pt); with any other value the run would not be
    the one they trained, so they are refused, each named."""
    from monet_utils.config import RETIRED_FIELDS
    saved = {**CycleGANConfig(epochs=3).to_dict(), **RETIRED_FIELDS}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert CycleGANConfig.load(tmp_path / "config.json") == CycleGANConfig(epochs=3)
    for name, value in (("ema_decay", 0.999), ("painting_augment", "crop"), ("d_updates", 2)):
        with pytest.raises(ConfigError, match=f"'{name}': {value!r}.*no longer has"):
            CycleGANConfig.from_dict({**saved, name: value})
    with pytest.raises(ConfigError, match="unknown config key\\(s\\) \\['real_lable'\\]"):
        CycleGANConfig.from_dict({**saved, "real_lable": 1.0})
