"""ResNet generator and 70x70 PatchGAN discriminator of Zhu et al. 2017 (arXiv:1703.10593),
the reference code's U-Net generator as an option, and the CUT reference's anti-aliased
resampling (`antialias`: its default for CUT and FastCUT).

Layer for layer the reference implementation's `ResnetGenerator`, `UnetGenerator` (no dropout,
as CycleGAN trains it) and `NLayerDiscriminator` (n_layers=3) with `norm='instance'`:
InstanceNorm without affine parameters, so every conv keeps its bias. ReLUs are out of place:
in place after InstanceNorm makes autograd copy.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def norm_layer(channels: int, kind: str = "instance") -> nn.Module:
    """Per-image, per-channel normalisation without affine parameters. GroupNorm with one group
    per channel computes the same; unlike InstanceNorm2d it keeps the channels_last layout
    (PyTorch issue 72341). Neither has parameters, so checkpoints load into either."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(channels, channels, affine=False)
    raise ValueError(f"norm must be 'instance' or 'group', got {kind!r}")


def conv_norm_relu(in_ch: int, out_ch: int, norm: str = "instance", **conv_args) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, **conv_args), norm_layer(out_ch, norm), nn.ReLU()]


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            *conv_norm_relu(channels, channels, norm, kernel_size=3),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            norm_layer(channels, norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def upsample(in_ch: int, out_ch: int, kind: str = "transposed", **transposed_args) -> nn.Module:
    """Twice the size: a stride-2 transposed conv (`transposed_args` give its kernel), or
    "resize_conv", nearest-neighbour x2 then a 3x3 conv, whose kernels overlap evenly and so
    cannot paint the checkerboard transposed convs are known for (Odena et al. 2016)."""
    if kind == "transposed":
        return nn.ConvTranspose2d(in_ch, out_ch, stride=2, **transposed_args)
    if kind == "resize_conv":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                             nn.Conv2d(in_ch, out_ch, kernel_size=3))
    raise ValueError(f"upsampling must be 'transposed' or 'resize_conv', got {kind!r}")


def binomial_kernel(taps: tuple[float, ...], channels: int, gain: float = 1.0) -> torch.Tensor:
    """The separable binomial filter of `taps`, normalised to sum to `gain`, one per channel."""
    row = torch.tensor(taps)
    kernel = torch.outer(row, row)
    return (kernel * gain / kernel.sum()).expand(channels, 1, len(taps), len(taps)).clone()


class BlurDownsample(nn.Module):
    """Half the size without aliasing (Zhang 2019, arXiv:1904.11486): blur with the [1, 2, 1]
    binomial filter, then keep every other pixel; the CUT reference's `Downsample`."""

    kernel_size, stride = (3, 3), (2, 2)  # for `receptive_field`

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("kernel", binomial_kernel((1.0, 2.0, 1.0), channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=x.shape[1])


class BlurUpsample(nn.Module):
    """Twice the size: a stride-2 transposed conv with the [1, 3, 3, 1] binomial filter (x4, which
    keeps the mean), over the input with its edge repeated once; the CUT reference's `Upsample`."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("kernel", binomial_kernel((1.0, 3.0, 3.0, 1.0), channels, gain=4.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The edge repeated by indexing: inductor's backward of replication_pad2d fails (torch 2.10, CPU).
        rows = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
        padded = torch.cat([rows[..., :1], rows, rows[..., -1:]], dim=-1)
        out = F.conv_transpose2d(padded, self.kernel, stride=2, padding=2, groups=x.shape[1])
        return out[..., 1:-1, 1:-1]


class ResnetGenerator(nn.Module):
    """c7s1-64, d128, d256, n_res_blocks x R256, u128, u64, c7s1-3, tanh (paper's appendix 7.2).

    `antialias` (the CUT reference's default): each stride-2 conv becomes a stride-1 conv, norm,
    ReLU and a `BlurDownsample`, and each transposed conv a `BlurUpsample` and a 3x3 conv (with
    upsampling="resize_conv" the resize conv stays). Layer indices are then the CUT reference's,
    which PatchNCE's `layers` name.
    """

    def __init__(self, ngf: int = 64, n_res_blocks: int = 9, channels: int = 3, norm: str = "instance",
                 upsampling: str = "transposed", antialias: bool = False):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), *conv_norm_relu(channels, ngf, norm, kernel_size=7)]
        for mult in (1, 2):
            width = ngf * mult * 2
            if antialias:
                layers += [*conv_norm_relu(ngf * mult, width, norm, kernel_size=3, padding=1), BlurDownsample(width)]
            else:
                layers += conv_norm_relu(ngf * mult, width, norm, kernel_size=3, stride=2, padding=1)
        layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_res_blocks)]
        for mult in (4, 2):
            width = ngf * mult // 2
            if antialias and upsampling == "transposed":
                layers += [BlurUpsample(ngf * mult), nn.Conv2d(ngf * mult, width, kernel_size=3, padding=1)]
            else:
                layers.append(upsample(ngf * mult, width, upsampling, kernel_size=3, padding=1, output_padding=1))
            layers += [norm_layer(width, norm), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def features(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """The outputs of `layers` (indices into `model`, ascending), the layers after the last not
        run: PatchNCE's features. Not part of `forward`, which exports keep alone."""
        features = []
        for index, layer in enumerate(self.model[:layers[-1] + 1]):
            x = layer(x)
            if index in layers:
                features.append(x)
        return features


class UnetBlock(nn.Module):
    """One level of the U-Net: halve, run the inner levels, double back, and concatenate the
    level's input (the reference's `UnetSkipConnectionBlock`)."""

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None = None, norm: str = "instance",
                 upsampling: str = "transposed", in_ch: int | None = None, outermost: bool = False):
        super().__init__()
        self.outermost = outermost
        innermost = submodule is None
        down = [nn.Conv2d(in_ch or outer, inner, kernel_size=4, stride=2, padding=1)]
        if not (outermost or innermost):
            down.append(norm_layer(inner, norm))
        up = [nn.ReLU(), upsample(inner if innermost else inner * 2, outer, upsampling, kernel_size=4, padding=1)]
        up.append(nn.Tanh() if outermost else norm_layer(outer, norm))
        self.model = nn.Sequential(*down, *([submodule] if submodule else []), *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # The reference's in-place LeakyReLU also changes the skip it concatenates: both carry it.
        x = nn.functional.leaky_relu(x, 0.2)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The reference's U-Net: `depth` halvings to a (size / 2**depth) bottleneck, 8 for 256x256
    (`unet_256`, 1x1), channels ngf, 2, 4, then 8 x ngf for the deeper levels."""

    def __init__(self, ngf: int = 64, depth: int = 8, channels: int = 3, norm: str = "instance",
                 upsampling: str = "transposed"):
        super().__init__()
        if depth < 5:
            raise ValueError(f"a U-Net needs at least 5 levels, got depth {depth}")
        self.multiple = 2 ** depth
        block = None
        for _ in range(depth - 4):
            block = UnetBlock(ngf * 8, ngf * 8, block, norm, upsampling)
        for mult in (4, 2, 1):
            block = UnetBlock(ngf * mult, ngf * mult * 2, block, norm, upsampling)
        self.model = UnetBlock(channels, ngf, block, norm, upsampling, in_ch=channels, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sizes that are not a multiple of 2**depth (stylizing photos at their own size) are
        padded by repeating the edge, and the output cropped back; training sizes pass as they are."""
        height, width = x.shape[-2:]
        padded = nn.functional.pad(x, (0, -width % self.multiple, 0, -height % self.multiple), mode="replicate")
        return self.model(padded)[..., :height, :width]


def unet_depth(image_size: int) -> int:
    """Halvings for `image_size`: as many as it divides by 2, at most the reference's 8."""
    depth = 0
    while depth < 8 and image_size % 2 ** (depth + 1) == 0:
        depth += 1
    return depth


def build_generator(config, norm: str | None = None) -> nn.Module:
    """The generator `config` names (`generator`, `upsampling`, sizes); `norm` overrides config.norm."""
    norm = norm or config.norm
    if config.generator == "unet":
        return UnetGenerator(config.ngf, unet_depth(config.image_size), norm=norm, upsampling=config.upsampling)
    return ResnetGenerator(config.ngf, config.n_res_blocks, norm=norm, upsampling=config.upsampling,
                           antialias=config.antialiased)


class PatchDiscriminator(nn.Module):
    """C64-C128-C256-C512 then a 1-channel conv: each output scores one 70x70 input patch.

    256x256 in gives a 1x30x30 map. No InstanceNorm on the first layer (paper, section 7.2).
    `n_layers` is the reference's `n_layers_D`: 3 is the 70x70 PatchGAN; each layer fewer drops a
    stride-2 conv (2: 34x34 patches, 1: 16x16). `antialias` (the CUT reference's default): each
    stride-2 conv becomes a stride-1 conv followed by a `BlurDownsample`, after its activation.
    """

    def __init__(self, ndf: int = 64, channels: int = 3, norm: str = "instance", n_layers: int = 3,
                 antialias: bool = False):
        super().__init__()
        leaky = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        stride = 1 if antialias else 2
        blur = lambda width: [BlurDownsample(width)] if antialias else []  # noqa: E731
        widths = [ndf * min(2 ** n, 8) for n in range(n_layers + 1)]
        layers = [nn.Conv2d(channels, ndf, kernel_size=4, stride=stride, padding=1), leaky(), *blur(ndf)]
        for n in range(1, n_layers + 1):  # the last of them keeps the size (stride 1)
            last = n == n_layers
            layers += [nn.Conv2d(widths[n - 1], widths[n], kernel_size=4, stride=1 if last else stride, padding=1),
                       norm_layer(widths[n], norm), leaky(), *([] if last else blur(widths[n]))]
        self.model = nn.Sequential(*layers, nn.Conv2d(widths[-1], 1, kernel_size=4, stride=1, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_discriminator(config, norm: str | None = None) -> nn.Module:
    """The discriminator `config` names (`ndf`, `d_layers`, `antialias`); `norm` overrides config.norm."""
    return PatchDiscriminator(config.ndf, norm=norm or config.norm, n_layers=config.d_layers,
                              antialias=config.antialiased)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """N(0, gain) conv and linear weights and zero biases, the reference's `init_type='normal'`."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


def receptive_field(net: nn.Module) -> int:
    """Receptive field, in input pixels, of one output unit of a plain stack of convs (and blurs)."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, BlurDownsample))]
    size = 1
    for layer in reversed(layers):
        size = (size - 1) * layer.stride[0] + layer.kernel_size[0]
    return size


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def describe_models(generator: nn.Module, discriminator: nn.Module, image_size: int = 256) -> str:
    """Parameter counts, and what one image of `image_size` becomes in each network."""
    device = next(generator.parameters()).device
    with torch.inference_mode():
        image = torch.zeros(1, 3, image_size, image_size, device=device)
        g_out, d_out = generator(image).shape, discriminator(image).shape
    field = receptive_field(discriminator)
    return "\n".join([
        f"{type(generator).__name__ + ':':<19} {count_parameters(generator):>11,} parameters, "
        f"{tuple(image.shape)} -> {tuple(g_out)}",
        f"PatchDiscriminator: {count_parameters(discriminator):>11,} parameters, {tuple(image.shape)} -> {tuple(d_out)}",
        f"Each of the {d_out[-2]}x{d_out[-1]} discriminator outputs judges a {field}x{field} patch of the input.",
    ])
