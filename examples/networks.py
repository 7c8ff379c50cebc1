"""Three 3-D networks of the kinds MONAI, pytorch-3dunet and torchvision-video users train, in lucid.

    from networks import ResidualUNet, GroupNormUNet, R2Plus1dNet

    model = ResidualUNet(dropout=0.0)
    y = model(lucid.randn(*ResidualUNet.example_shape(batch=2)))

- `ResidualUNet`: a UNet of residual units (Conv3d -> InstanceNorm3d(affine) -> Dropout -> PReLU, twice,
  plus a 1x1x1 or strided residual conv), strided convs down, transposed convs up.
- `GroupNormUNet`: an encoder-decoder of (Conv3d -> GroupNorm(8, C) -> SiLU) blocks, strided convs
  down, trilinear `F.interpolate` up to the skip's size, skip concatenation.
- `R2Plus1dNet`: a (2+1)-D video ResNet: each 3-D conv factored into a 1x3x3 spatial conv and a 3x1x1
  temporal conv, BatchNorm3d, ReLU, residual blocks, `AdaptiveAvgPool3d(1)` and a Linear classifier.

Every network is an ordinary `lucid.nn.Module` with PyTorch-style parameter names (examples/
torch_networks.py builds the same networks in PyTorch with the same names, so state dicts move across
unchanged) and a classmethod `example_shape(batch=1)` giving a small valid input shape.
"""

import lucid
import lucid.nn as nn
import lucid.nn.functional as F


def init_conv_weights(model, nonlinearity):
    """He-normal conv weights (fan out) and zero conv biases; norms start at scale 1, shift 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity=nonlinearity)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)) and module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class SkipConnected(nn.Module):
    """A UNet's data flow: the `encoder` units in order, each one's output kept as a skip; then the
    `decoder` units, each given the features and the skip of its level (deepest first); then `head`.
    Subclasses build the three. Inputs are (N, C, D, H, W) with sizes divisible by 2**len(decoder)."""

    @classmethod
    def example_shape(cls, batch=1):
        return (batch, 1, 16, 16, 16)

    def forward(self, x):
        skips = []
        for unit in self.encoder:
            x = unit(x)
            skips.append(x)
        for unit, skip in zip(self.decoder, reversed(skips[:-1])):
            x = unit(x, skip)
        return self.head(x)


# =========================================================================== residual-unit UNet
class ResidualUnit(nn.Module):
    """`subunits` x (Conv3d k3 -> InstanceNorm3d(affine) -> Dropout -> PReLU) in `self.conv`, the first
    with `stride`, plus `self.residual`: a strided k3 conv when the size changes, a 1x1x1 conv when only
    the channels do, else the identity."""

    def __init__(self, in_channels, out_channels, stride=1, subunits=2, dropout=0.1):
        super().__init__()
        layers = []
        for index in range(subunits):
            layers += [nn.Conv3d(in_channels if index == 0 else out_channels, out_channels, kernel_size=3,
                                 stride=stride if index == 0 else 1, padding=1),
                       nn.InstanceNorm3d(out_channels, affine=True), nn.Dropout(dropout), nn.PReLU()]
        self.conv = nn.Sequential(*layers)
        if stride != 1:
            self.residual = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        elif in_channels != out_channels:
            self.residual = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        else:
            self.residual = nn.Identity()

    def forward(self, x):
        return self.conv(x) + self.residual(x)


class UpUnit(nn.Module):
    """Doubles the size (ConvTranspose3d k3 s2 -> InstanceNorm3d -> PReLU per channel in `self.up`),
    concatenates the skip and merges with a one-subunit ResidualUnit (`self.merge`)."""

    def __init__(self, in_channels, out_channels, dropout):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm3d(out_channels, affine=True), nn.PReLU(out_channels))
        self.merge = ResidualUnit(2 * out_channels, out_channels, subunits=1, dropout=dropout)

    def forward(self, x, skip):
        return self.merge(lucid.cat([self.up(x), skip], dim=1))


class ResidualUNet(SkipConnected):
    """A UNet of residual units for (N, C, D, H, W) inputs whose sizes are divisible by 2**(len(channels)-1).

    `encoder.0` keeps the size; `encoder.i` (i >= 1) halves it with stride 2 and has channels[i]
    channels. `decoder.j` goes back up one level (deepest first), and a 1x1x1 conv (`head`) maps to
    out_channels. `dropout` is the probability of every Dropout layer.
    """

    def __init__(self, in_channels=1, out_channels=2, channels=(8, 16, 32), dropout=0.1):
        super().__init__()
        self.encoder = nn.ModuleList(
            ResidualUnit(in_channels if i == 0 else channels[i - 1], width, stride=1 if i == 0 else 2,
                         dropout=dropout)
            for i, width in enumerate(channels))
        self.decoder = nn.ModuleList(UpUnit(channels[i + 1], channels[i], dropout)
                                     for i in reversed(range(len(channels) - 1)))
        self.head = nn.Conv3d(channels[0], out_channels, kernel_size=1)
        init_conv_weights(self, "leaky_relu")


# =========================================================================== GroupNorm encoder-decoder
def conv_gn_act(in_channels, out_channels, stride=1):
    """Conv3d k3 (no bias: the norm shifts) -> GroupNorm(8 groups) -> SiLU."""
    return [nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(8, out_channels), nn.SiLU(inplace=True)]


class InterpolatingUp(nn.Module):
    """A 1x1x1 conv to the skip's width (`reduce`), trilinear interpolation to the skip's size, the
    skip concatenated in front, then two conv_gn_act blocks (`block`)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.reduce = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        self.block = nn.Sequential(*conv_gn_act(2 * out_channels, out_channels),
                                   *conv_gn_act(out_channels, out_channels))

    def forward(self, x, skip):
        x = F.interpolate(self.reduce(x), size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.block(lucid.cat([skip, x], dim=1))


class GroupNormUNet(SkipConnected):
    """An encoder-decoder for (N, C, D, H, W) inputs whose sizes are divisible by 2**(len(channels)-1).

    `encoder.i` is two conv_gn_act blocks, the first of stride 2 for i >= 1 (channels[i] channels, a
    multiple of 8); `decoder.j` is an InterpolatingUp back to the level above (deepest first); `head`
    is a 1x1x1 conv to out_channels.
    """

    def __init__(self, in_channels=1, out_channels=2, channels=(8, 16, 32)):
        super().__init__()
        self.encoder = nn.ModuleList(
            nn.Sequential(*conv_gn_act(in_channels if i == 0 else channels[i - 1], width, 1 if i == 0 else 2),
                          *conv_gn_act(width, width))
            for i, width in enumerate(channels))
        self.decoder = nn.ModuleList(InterpolatingUp(channels[i + 1], channels[i])
                                     for i in reversed(range(len(channels) - 1)))
        self.head = nn.Conv3d(channels[0], out_channels, kernel_size=1)
        init_conv_weights(self, "relu")


# =========================================================================== (2+1)-D video ResNet
def factored_conv(in_channels, out_channels, stride=1):
    """A 3x3x3 conv factored as a 1x3x3 spatial conv -> BatchNorm3d -> ReLU -> a 3x1x1 temporal conv,
    with the middle width that keeps the 3x3x3 conv's parameter count."""
    middle = (in_channels * out_channels * 27) // (in_channels * 9 + out_channels * 3)
    return [nn.Conv3d(in_channels, middle, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(middle), nn.ReLU(inplace=True),
            nn.Conv3d(middle, out_channels, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(1, 0, 0), bias=False)]


class Block2Plus1d(nn.Module):
    """A residual block of two factored convs, each followed by BatchNorm3d (`conv1`, `conv2`), with a
    strided 1x1x1 conv + BatchNorm3d shortcut (`shortcut`) when the shape changes."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Sequential(*factored_conv(in_channels, out_channels, stride), nn.BatchNorm3d(out_channels),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(*factored_conv(out_channels, out_channels), nn.BatchNorm3d(out_channels))
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride,
                                                    bias=False), nn.BatchNorm3d(out_channels))

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class R2Plus1dNet(nn.Module):
    """A (2+1)-D ResNet classifying (N, C, T, H, W) clips: logits of shape (N, num_classes).

    `stem`: a 1x7x7 conv of stride (1, 2, 2) and a 3x1x1 conv (each with BatchNorm3d and ReLU);
    `stages.i`: `blocks` Block2Plus1d of widths[i] channels, the first of stride 2 for i >= 1;
    `pool`: AdaptiveAvgPool3d(1); `fc`: Linear to num_classes.
    """

    def __init__(self, in_channels=3, num_classes=5, widths=(8, 16, 32), blocks=1):
        super().__init__()
        stem_width = widths[0] * 3 // 2
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem_width, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(stem_width), nn.ReLU(inplace=True),
            nn.Conv3d(stem_width, widths[0], kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
        stages = []
        for i, width in enumerate(widths):
            first = Block2Plus1d(widths[max(i - 1, 0)], width, stride=1 if i == 0 else 2)
            stages.append(nn.Sequential(first, *(Block2Plus1d(width, width) for _ in range(blocks - 1))))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        init_conv_weights(self, "relu")
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    @classmethod
    def example_shape(cls, batch=1):
        return (batch, 3, 4, 32, 32)

    def forward(self, x):
        features = self.pool(self.stages(self.stem(x)))
        return self.fc(features.flatten(1))
