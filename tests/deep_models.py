"""Deep 3-D networks for the accuracy tests, and one training step's parameter gradients measured
against a float64 run.

A model is built by a function of the framework, lucid or torch, so the lucid model and its PyTorch
twin have the same structure and parameter names:
- `video_resnet`: a (2+1)-D video ResNet in the r2plus1d style: a (1,7,7) + (3,1,1) stem, four stages
  of two residual blocks whose convolutions are each a spatial (1,3,3) conv and a temporal (3,1,1)
  conv with BatchNorm3d + ReLU between, stride 2 at the start of stages 2-4, AdaptiveAvgPool3d(1) and
  a Linear head. On a 2 x 3 x 8 x 32 x 32 clip the last stage's BatchNorms see 2 x 1 x 2 x 2 = 8
  values per channel;
- `unet`: examples/models.py's UNet3D (with its PyTorch mirror): (Conv3d -> BatchNorm3d -> ReLU) x 2
at every level, max pooling, ConvTranspose3d up-sampling and skip connections.

A gradient of a ReLU network is discontinuous where a ReLU's input crosses 0: an fp32 run whose
forward rounding moves one input across the kink gets another gradient, although it is as accurate
as any other fp32 run. `kink_margin` tells whether a float64 reference is safe from that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import lucid

from models import UNet3D
from torch_models import torch_mirrors


def video_resnet(framework, widths=(4, 8, 8, 16), classes=5):
    """The (2+1)-D ResNet built from the layer classes of `framework` (lucid or torch)."""
    nn = framework.nn

    def norm_relu(channels):
        return [nn.BatchNorm3d(channels), nn.ReLU()]

    def conv2plus1d(cin, cout, stride):
        """A spatial conv (stride along H and W) then a temporal conv (stride along D)."""
        mid = max(cin, cout)
        return [nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
                *norm_relu(mid),
                nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(*conv2plus1d(cin, cout, stride), *norm_relu(cout),
                                      *conv2plus1d(cout, cout, 1), nn.BatchNorm3d(cout))
            self.shortcut = (nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))
                             if stride != 1 or cin != cout else nn.Identity())
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.shortcut(x))

    class VideoResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv3d(3, 8, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False), *norm_relu(8),
                nn.Conv3d(8, widths[0], (3, 1, 1), padding=(1, 0, 0), bias=False), *norm_relu(widths[0]))
            stages, cin = [], widths[0]
            for k, cout in enumerate(widths):
                stages.append(nn.Sequential(Block(cin, cout, 1 if k == 0 else 2), Block(cout, cout, 1)))
                cin = cout
            self.stages = nn.Sequential(*stages)
            self.pool = nn.AdaptiveAvgPool3d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))

    return VideoResNet()


def unet(framework, base=4, depth=3):
    """examples/models.py's 3-D UNet with `depth` poolings (lucid), or its PyTorch mirror (torch)."""
    if framework.__name__ == "lucid":
        return UNet3D(in_channels=1, out_channels=2, base=base, depth=depth)
    return torch_mirrors(framework)["UNet3D"](in_channels=1, out_channels=2, base=base, depth=depth)


@dataclass(frozen=True)
class Step:
    """One training step: a model, its seeded weights and data, and its loss."""

    name: str
    build: Callable                 # framework (lucid or torch) -> module
    input_shape: tuple
    classes: int | None             # a classifier's classes (cross-entropy on labels), else None (MSE)
    seed: int

    def data(self) -> tuple:
        """The float32 input and the target (int64 labels, or a float32 map of the output's shape)."""
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal(self.input_shape).astype(np.float32)
        if self.classes:
            return x, rng.integers(0, self.classes, self.input_shape[0])
        return x, rng.standard_normal((self.input_shape[0], 2) + self.input_shape[2:]).astype(np.float32)

    def initial_state(self) -> dict:
        """The model's state dict with seeded weights, drawn here rather than by either framework's
        initialisers: He-normal weights (over each weight's trailing dimensions), biases 0,
        BatchNorm scales 1. Buffers keep the model's values."""
        rng = np.random.default_rng(self.seed)
        model = self.build(lucid)
        state = {name: np.array(value, dtype=np.float32) for name, value in model.state_dict().items()}
        for name, _ in model.named_parameters():
            shape = state[name].shape
            if len(shape) >= 2:
                state[name] = (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)
            else:
                state[name] = np.full(shape, 0.0 if name.endswith("bias") else 1.0, np.float32)
        return state


def step_gradients(framework, step: Step, state: dict, dtype, compiled=False, relu_inputs=None) -> dict:
    """The parameter gradients (as float64 arrays, by name) of one training-mode step of `step` run
    by `framework` (lucid or torch) in `dtype`, compiled with lucid.compile if asked. The input of
    every ReLU call is appended to `relu_inputs` (eager runs only)."""
    nn = framework.nn
    model = step.build(framework)
    model.load_state_dict({name: framework.tensor(value) for name, value in state.items()})
    model.to(dtype).train()
    if relu_inputs is not None:
        record_relu_inputs(model, relu_inputs)
    x, target = step.data()
    run = framework.compile(model) if compiled else model
    output = run(framework.tensor(x, dtype=dtype))
    if step.classes:
        loss = nn.CrossEntropyLoss()(output, framework.tensor(target))
    else:
        loss = nn.MSELoss()(output, framework.tensor(target, dtype=dtype))
    loss.backward()
    return {name: np.array(p.grad.numpy(), dtype=np.float64) for name, p in model.named_parameters()}


def record_relu_inputs(model, inputs: list) -> None:
    """Make every ReLU module of `model` append its input (as a float64 array) to `inputs`."""
    for module in model.modules():
        if type(module).__name__ == "ReLU":
            def forward(x, relu=module.forward):
                inputs.append(np.array(x.detach().numpy(), dtype=np.float64))
                return relu(x)

            module.forward = forward


def relative_errors(gradients: dict, reference: dict) -> dict:
    """||g - g_ref|| / ||g_ref|| of each parameter."""
    return {name: float(np.linalg.norm(gradients[name] - ref) / np.linalg.norm(ref)) for name, ref in reference.items()}


def worst(errors: dict) -> tuple:
    """(parameter, error) of the largest error."""
    name = max(errors, key=errors.get)
    return name, errors[name]


def kink_margin(reference_inputs: list, fp32_inputs: list) -> float:
    """How far the float64 run's ReLU inputs stay from the kink, in units of the fp32 run's forward
    error: the smallest, over ReLU calls, of min |x64| / max |x32 - x64|. Above 1, rounding like the
    fp32 run's moves no ReLU input across 0, so an fp32 gradient can be compared with the float64 one."""
    return min(float(np.abs(ref).min() / max(np.abs(x - ref).max(), np.finfo(np.float64).tiny))
               for ref, x in zip(reference_inputs, fp32_inputs, strict=True))
