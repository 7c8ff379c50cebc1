"""Small example 3-D models built from lucid.nn, shared by tests, examples and benchmarks.

    from models import UNet3D, ConvAutoencoder3D, VideoClassifier

    model = UNet3D(base=4)
    y = model(lucid.randn(*UNet3D.example_shape(batch=2)))

Every model is an ordinary `lucid.nn.Module` whose parameter names follow PyTorch's
(e.g. `down.0.block.0.weight`), and has a classmethod `example_shape(batch=1)` giving a small
valid input shape for its default configuration.
"""

import lucid
import lucid.nn as nn
from lucid.errors import ShapeError


class DoubleConv3d(nn.Module):
    """(Conv3d k3 p1 -> BatchNorm3d -> ReLU) twice, kept in `self.block`; spatial size is unchanged.

    With batch_norm=False the BatchNorm3d layers are left out (and the convs keep their bias).
    """

    def __init__(self, in_channels, out_channels, batch_norm=True):
        super().__init__()
        layers = []
        for channels in (in_channels, out_channels):
            layers.append(nn.Conv3d(channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm3d(out_channels))
            layers.append(nn.ReLU())
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class UNet3D(nn.Module):
    """A 3-D UNet for (N, C, D, H, W) inputs whose D, H and W are divisible by 2**depth.

    Encoder level i (i < depth) is a DoubleConv3d with base * 2**i channels (`down.i`), followed by
    MaxPool3d(2) (`pool`); the `bottleneck` has base * 2**depth channels. Decoder level i upsamples
    with ConvTranspose3d(k=2, s=2) (`up.i`), concatenates the matching encoder output along the
    channel axis and applies a DoubleConv3d (`decode.i`). A 1x1x1 Conv3d (`head`) maps to
    out_channels. The output has shape (N, out_channels, D, H, W).
    """

    def __init__(self, in_channels=1, out_channels=2, base=8, depth=2, batch_norm=True):
        super().__init__()
        self.depth = depth
        widths = [base * 2 ** level for level in range(depth + 1)]
        inputs = [in_channels] + widths[:-1]
        self.down = nn.ModuleList(DoubleConv3d(inputs[i], widths[i], batch_norm) for i in range(depth))
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = DoubleConv3d(inputs[depth], widths[depth], batch_norm)
        levels = range(depth - 1, -1, -1)         # decoder order: deepest level first
        self.up = nn.ModuleList(nn.ConvTranspose3d(widths[i + 1], widths[i], kernel_size=2, stride=2)
                                for i in levels)
        self.decode = nn.ModuleList(DoubleConv3d(2 * widths[i], widths[i], batch_norm) for i in levels)
        self.head = nn.Conv3d(widths[0], out_channels, kernel_size=1)

    @classmethod
    def example_shape(cls, batch=1):
        return (batch, 1, 16, 16, 16)

    def forward(self, x):
        self._check_input(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            x = block(lucid.cat([up(x), skip], dim=1))
        return self.head(x)

    def _check_input(self, x):
        multiple = 2 ** self.depth
        if x.ndim != 5 or any(size % multiple for size in x.shape[2:]):
            raise ShapeError(f"{type(self).__name__}: expected a 5-D input (N, C, D, H, W) with D, H and W "
                             f"divisible by {multiple} (2**depth, depth={self.depth}), got shape {x.shape}")


class ConvAutoencoder3D(nn.Module):
    """A convolutional autoencoder for (N, C, D, H, W) inputs with D, H and W divisible by 4.

    `encoder`: two Conv3d(k3, s2, p1) + ReLU blocks, down to `latent` channels at 1/4 of the size.
    `decoder`: LazyConvTranspose3d(k4, s2, p1) + ReLU, then LazyConvTranspose3d(k3, s2, p1,
    output_padding=1) back to in_channels, then Sigmoid. The decoder layers are lazy: their
    in_channels (and weights) are resolved by the first forward call.
    """

    def __init__(self, in_channels=1, base=8, latent=16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv3d(in_channels, base, kernel_size=3, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(base, latent, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.LazyConvTranspose3d(base, kernel_size=4, stride=2, padding=1), nn.ReLU(),
            nn.LazyConvTranspose3d(in_channels, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    @classmethod
    def example_shape(cls, batch=1):
        return (batch, 1, 8, 8, 8)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class VideoClassifier(nn.Module):
    """A small clip classifier for (N, C, T, H, W) video: logits of shape (N, num_classes).

    `stem`: Conv3d(k(3,7,7), s(1,2,2), p(1,3,3)) -> BatchNorm3d -> ReLU -> MaxPool3d(k(1,3,3),
    s(1,2,2), p(0,1,1)), i.e. H and W shrink by 4 while T is kept. `block`: Conv3d k3 p1 to
    2 * width channels -> BatchNorm3d -> ReLU. Then a global mean over T, H, W and `head`
    (Flatten -> Linear to num_classes).
    """

    def __init__(self, in_channels=3, num_classes=5, width=8):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.block = nn.Sequential(
            nn.Conv3d(width, 2 * width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm3d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width, num_classes))

    @classmethod
    def example_shape(cls, batch=1):
        return (batch, 3, 4, 32, 32)

    def forward(self, x):
        features = self.block(self.stem(x))
        return self.head(features.mean(dim=(2, 3, 4), keepdim=True))
