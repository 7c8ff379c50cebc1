"""PyTorch forms of examples/models.py's UNet3D and VideoClassifier (batch_norm=True), with lucid's
parameter names, so a lucid state dict loads into them strictly. Used by the parity tests and by
benchmarks/unet_step.py; torch is passed in, so importing this module does not need it.

    mirror = torch_mirrors(torch)["UNet3D"](in_channels=1, out_channels=2, base=4, depth=2)
"""


def torch_mirrors(torch):
    """PyTorch versions of UNet3D and VideoClassifier (batch_norm=True) with lucid's module names."""
    tnn = torch.nn

    class DoubleConv3d(tnn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.block = tnn.Sequential(
                tnn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False), tnn.BatchNorm3d(out_channels),
                tnn.ReLU(),
                tnn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False), tnn.BatchNorm3d(out_channels),
                tnn.ReLU(),
            )

        def forward(self, x):
            return self.block(x)

    class UNet3D(tnn.Module):
        def __init__(self, in_channels, out_channels, base, depth):
            super().__init__()
            widths = [base * 2 ** level for level in range(depth + 1)]
            inputs = [in_channels] + widths[:-1]
            levels = range(depth - 1, -1, -1)
            self.down = tnn.ModuleList(DoubleConv3d(inputs[i], widths[i]) for i in range(depth))
            self.pool = tnn.MaxPool3d(2)
            self.bottleneck = DoubleConv3d(inputs[depth], widths[depth])
            self.up = tnn.ModuleList(tnn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2) for i in levels)
            self.decode = tnn.ModuleList(DoubleConv3d(2 * widths[i], widths[i]) for i in levels)
            self.head = tnn.Conv3d(widths[0], out_channels, 1)

        def forward(self, x):
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottleneck(x)
            for up, block, skip in zip(self.up, self.decode, reversed(skips)):
                x = block(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    class VideoClassifier(tnn.Module):
        def __init__(self, in_channels, num_classes, width):
            super().__init__()
            self.stem = tnn.Sequential(
                tnn.Conv3d(in_channels, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                tnn.BatchNorm3d(width), tnn.ReLU(),
                tnn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            )
            self.block = tnn.Sequential(tnn.Conv3d(width, 2 * width, 3, padding=1, bias=False),
                                        tnn.BatchNorm3d(2 * width), tnn.ReLU())
            self.head = tnn.Sequential(tnn.Flatten(), tnn.Linear(2 * width, num_classes))

        def forward(self, x):
            return self.head(self.block(self.stem(x)).mean(dim=(2, 3, 4), keepdim=True))

    return {"UNet3D": UNet3D, "VideoClassifier": VideoClassifier}
