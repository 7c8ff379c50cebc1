"""PyTorch forms of examples/networks.py's ResidualUNet, GroupNormUNet and R2Plus1dNet, with the same
module names, so a lucid state dict loads into them strictly (their own initial weights do not matter:
the tests and benchmarks/networks.py load lucid's). torch is passed in, so importing this module does
not need it.

    twin = torch_networks(torch)["GroupNormUNet"](channels=(8, 16))
    twin.load_state_dict({name: torch.from_numpy(value) for name, value in model.state_dict().items()})
"""


def torch_networks(torch):
    """PyTorch versions of the networks of examples/networks.py, by class name."""
    tnn = torch.nn

    class SkipConnected(tnn.Module):
        def forward(self, x):
            skips = []
            for unit in self.encoder:
                x = unit(x)
                skips.append(x)
            for unit, skip in zip(self.decoder, reversed(skips[:-1])):
                x = unit(x, skip)
            return self.head(x)

    class ResidualUnit(tnn.Module):
        def __init__(self, in_channels, out_channels, stride=1, subunits=2, dropout=0.1):
            super().__init__()
            layers = []
            for index in range(subunits):
                layers += [tnn.Conv3d(in_channels if index == 0 else out_channels, out_channels, 3,
                                      stride=stride if index == 0 else 1, padding=1),
                           tnn.InstanceNorm3d(out_channels, affine=True), tnn.Dropout(dropout), tnn.PReLU()]
            self.conv = tnn.Sequential(*layers)
            self.residual = tnn.Identity()
            if stride != 1:
                self.residual = tnn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1)
            elif in_channels != out_channels:
                self.residual = tnn.Conv3d(in_channels, out_channels, 1)

        def forward(self, x):
            return self.conv(x) + self.residual(x)

    class UpUnit(tnn.Module):
        def __init__(self, in_channels, out_channels, dropout):
            super().__init__()
            self.up = tnn.Sequential(tnn.ConvTranspose3d(in_channels, out_channels, 3, stride=2, padding=1,
                                                         output_padding=1),
                                     tnn.InstanceNorm3d(out_channels, affine=True), tnn.PReLU(out_channels))
            self.merge = ResidualUnit(2 * out_channels, out_channels, subunits=1, dropout=dropout)

        def forward(self, x, skip):
            return self.merge(torch.cat([self.up(x), skip], dim=1))

    class ResidualUNet(SkipConnected):
        def __init__(self, in_channels=1, out_channels=2, channels=(8, 16, 32), dropout=0.1):
            super().__init__()
            self.encoder = tnn.ModuleList(
                ResidualUnit(in_channels if i == 0 else channels[i - 1], width, 1 if i == 0 else 2, dropout=dropout)
                for i, width in enumerate(channels))
            self.decoder = tnn.ModuleList(UpUnit(channels[i + 1], channels[i], dropout)
                                          for i in reversed(range(len(channels) - 1)))
            self.head = tnn.Conv3d(channels[0], out_channels, 1)

    def conv_gn_act(in_channels, out_channels, stride=1):
        return [tnn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                tnn.GroupNorm(8, out_channels), tnn.SiLU()]

    class InterpolatingUp(tnn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.reduce = tnn.Conv3d(in_channels, out_channels, 1)
            self.block = tnn.Sequential(*conv_gn_act(2 * out_channels, out_channels),
                                        *conv_gn_act(out_channels, out_channels))

        def forward(self, x, skip):
            x = tnn.functional.interpolate(self.reduce(x), size=skip.shape[2:], mode="trilinear", align_corners=False)
            return self.block(torch.cat([skip, x], dim=1))

    class GroupNormUNet(SkipConnected):
        def __init__(self, in_channels=1, out_channels=2, channels=(8, 16, 32)):
            super().__init__()
            self.encoder = tnn.ModuleList(
                tnn.Sequential(*conv_gn_act(in_channels if i == 0 else channels[i - 1], width, 1 if i == 0 else 2),
                               *conv_gn_act(width, width))
                for i, width in enumerate(channels))
            self.decoder = tnn.ModuleList(InterpolatingUp(channels[i + 1], channels[i])
                                          for i in reversed(range(len(channels) - 1)))
            self.head = tnn.Conv3d(channels[0], out_channels, 1)

    def factored_conv(in_channels, out_channels, stride=1):
        middle = (in_channels * out_channels * 27) // (in_channels * 9 + out_channels * 3)
        return [tnn.Conv3d(in_channels, middle, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
                tnn.BatchNorm3d(middle), tnn.ReLU(),
                tnn.Conv3d(middle, out_channels, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)]

    class Block2Plus1d(tnn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv1 = tnn.Sequential(*factored_conv(in_channels, out_channels, stride),
                                        tnn.BatchNorm3d(out_channels), tnn.ReLU())
            self.conv2 = tnn.Sequential(*factored_conv(out_channels, out_channels), tnn.BatchNorm3d(out_channels))
            self.shortcut = tnn.Identity()
            if stride != 1 or in_channels != out_channels:
                self.shortcut = tnn.Sequential(tnn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                                               tnn.BatchNorm3d(out_channels))

        def forward(self, x):
            return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))

    class R2Plus1dNet(tnn.Module):
        def __init__(self, in_channels=3, num_classes=5, widths=(8, 16, 32), blocks=1):
            super().__init__()
            stem_width = widths[0] * 3 // 2
            self.stem = tnn.Sequential(
                tnn.Conv3d(in_channels, stem_width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                tnn.BatchNorm3d(stem_width), tnn.ReLU(),
                tnn.Conv3d(stem_width, widths[0], (3, 1, 1), padding=(1, 0, 0), bias=False),
                tnn.BatchNorm3d(widths[0]), tnn.ReLU())
            self.stages = tnn.Sequential(*(
                tnn.Sequential(Block2Plus1d(widths[max(i - 1, 0)], width, 1 if i == 0 else 2),
                               *(Block2Plus1d(width, width) for _ in range(blocks - 1)))
                for i, width in enumerate(widths)))
            self.pool = tnn.AdaptiveAvgPool3d(1)
            self.fc = tnn.Linear(widths[-1], num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))

    return {"ResidualUNet": ResidualUNet, "GroupNormUNet": GroupNormUNet, "R2Plus1dNet": R2Plus1dNet}
