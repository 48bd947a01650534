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


@pytest.mark.parametrize("mode", ["lsgan", "bce"])
def test_a_real_label_below_one_lowers_only_the_real_target(mode):
    loss = GANLoss(mode)
    prediction = torch.tensor([[0.2, 0.9], [1.5, -0.3]])
    smoothed = torch.full_like(prediction, 0.9)
    expected = (torch.nn.functional.mse_loss if mode == "lsgan"
                else torch.nn.functional.binary_cross_entropy_with_logits)(prediction, smoothed)
    assert loss(prediction, True, real_label=0.9).item() == pytest.approx(expected.item())
    assert loss(prediction, False, real_label=0.9).item() == pytest.approx(loss(prediction, False).item())


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="wgan"):
        GANLoss("wgan")
