import math

import pytest
import torch

from monet_utils.losses import GANLoss


def test_lsgan_is_mean_squared_error_to_one_or_zero():
    loss = GANLoss("lsgan")
    prediction = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    assert loss(prediction, True).item() == pytest.approx((0 + 1 + 0.25 + 1) / 4)
    assert loss(prediction, False).item() == pytest.approx((1 + 0 + 0.25 + 4) / 4)


def test_bce_is_log_loss_on_logits():
    loss = GANLoss("bce")
    assert loss(torch.zeros(3, 3), True).item() == pytest.approx(math.log(2))
    assert loss(torch.full((2,), 100.0), True).item() == pytest.approx(0, abs=1e-6)
    assert loss(torch.full((2,), 100.0), False).item() == pytest.approx(100, rel=1e-4)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="wgan"):
        GANLoss("wgan")
