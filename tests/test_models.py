import pytest
import torch
from torch import nn

from monet_utils.models import (PatchDiscriminator, ResnetBlock, ResnetGenerator, count_parameters,
                                describe_models, init_weights, receptive_field)


def test_parameter_counts_match_the_reference():
    assert count_parameters(ResnetGenerator(ngf=64, n_res_blocks=9)) == 11_378_179
    assert count_parameters(PatchDiscriminator(ndf=64)) == 2_764_737


def test_generator_keeps_the_size_and_ends_in_tanh_range():
    generator = init_weights(ResnetGenerator(ngf=8, n_res_blocks=2))
    x = torch.randn(2, 3, 64, 64) * 3
    y = generator(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1
    assert sum(isinstance(m, ResnetBlock) for m in generator.modules()) == 2


def test_full_size_shapes_256():
    with torch.inference_mode():
        x = torch.zeros(1, 3, 256, 256)
        assert ResnetGenerator(ngf=16)(x).shape == (1, 3, 256, 256)
        assert PatchDiscriminator(ndf=64)(x).shape == (1, 1, 30, 30)


def test_discriminator_layout():
    layers = list(PatchDiscriminator(ndf=8).model)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(4, 4)] * 5
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in layers) == 3
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.2  # no norm after the first conv


@pytest.mark.parametrize("n_layers, field, size, outputs", [(3, 70, 256, 30), (2, 34, 128, 30), (1, 16, 64, 30)])
def test_receptive_field_by_formula_and_by_gradient(n_layers, field, size, outputs):
    """d_layers: 3 is the 70x70 PatchGAN; at a quarter of the size, one layer judges patches of a
    quarter of the side, in a 30x30 map as the 70x70 one at 256."""
    net = init_weights(PatchDiscriminator(ndf=4, n_layers=n_layers))
    assert receptive_field(net) == field
    # InstanceNorm mixes every pixel into every output, so measure the conv stack without it.
    for i, layer in enumerate(net.model):
        if isinstance(layer, nn.InstanceNorm2d):
            net.model[i] = nn.Identity()
    x = torch.randn(1, 3, size, size, requires_grad=True)
    y = net(x)
    assert y.shape == (1, 1, outputs, outputs)
    y[0, 0, outputs // 2, outputs // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)))
    assert rows.max() - rows.min() + 1 == field
    assert cols.max() - cols.min() + 1 == field


def test_fewer_discriminator_layers_drop_stride_2_convs_and_keep_the_norm_rule():
    for n_layers, widths in ((1, [8, 16, 1]), (2, [8, 16, 32, 1]), (4, [8, 16, 32, 64, 64, 1])):
        layers = list(PatchDiscriminator(ndf=8, n_layers=n_layers).model)
        convs = [m for m in layers if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == widths  # widths double up to 8 x ndf, as the reference's
        assert [c.stride[0] for c in convs] == [2] * n_layers + [1, 1]
        assert sum(isinstance(m, nn.InstanceNorm2d) for m in layers) == n_layers  # none after the first conv
        assert isinstance(layers[1], nn.LeakyReLU)


def test_init_is_normal_002_with_zero_bias():
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(ngf=16, n_res_blocks=2), gain=0.02)
    weights = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, nn.Conv2d)])
    assert abs(weights.std().item() - 0.02) < 0.001
    assert abs(weights.mean().item()) < 0.001
    assert all(m.bias.abs().sum() == 0 for m in net.modules() if isinstance(m, nn.Conv2d))


def test_describe_models_reports_counts_and_patch_map():
    text = describe_models(ResnetGenerator(ngf=64), PatchDiscriminator(ndf=64), image_size=256)
    assert "11,378,179" in text and "2,764,737" in text
    assert "(1, 1, 30, 30)" in text and "70x70" in text
