"""Real model code runs on lucid taken as its users have it: the INSTALLED sources of MONAI's UNet,
BasicUNet, SegResNet and DynUNet and torchvision's video r3d_18 and r2plus1d_18, read from
site-packages at test time with the word `torch` replaced by `lucid` (nothing of theirs is kept in
this repository), are built, given the PyTorch model's weights by `load_state_dict(strict=True)`,
and must give PyTorch's outputs. Optional: each package's tests skip when it is not installed.

The rewrite is an import hook: `lucid_monai.X` is `monai.X` rewritten, for the modules that build
networks (`networks.nets`, `networks.blocks`, `networks.layers`; `models.video.resnet` for
torchvision); the package's other modules (its pure-Python helpers: `monai.utils`, torchvision's
weight registry) are the installed modules themselves. Two edits beyond torch -> lucid, in `EDITS`
with their reasons: MONAI's `simplelayers` subclasses autograd `Function` (lucid has none), and
torchvision's builders register their names in torchvision's model registry (twice is refused).
"""
from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.util
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import lucid

torch = pytest.importorskip("torch")

#: (package, module, text, replacement) edits beyond torch -> lucid, each with its reason.
EDITS = [
    # lucid has no user-defined autograd Function; simplelayers' custom Functions (LLTM, bilateral
    # filters) are not used by the networks tested here, so they get a plain base class.
    ("monai", "networks.layers.simplelayers", "from torch.autograd import Function", "Function = object"),
    # torchvision's registry already holds the installed builders' names and refuses a second entry.
    ("torchvision", "models.video.resnet", "@register_model()\n", ""),
]


class _LazyPackage(types.ModuleType):
    """A rewritten package whose `__init__` is not run (it imports all of the package): a name is
    looked up in the `from .module import name` lines of that `__init__` on first use."""

    def __getattr__(self, name):
        if name.startswith("__") or "_init" not in self.__dict__:
            raise AttributeError(name)
        for node in _relative_imports(self._init):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    value = getattr(importlib.import_module(f"{self.__name__}.{node.module}"), alias.name)
                    setattr(self, name, value)
                    return value
        raise AttributeError(name)


def _relative_imports(source: str) -> list[ast.ImportFrom]:
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module]


class LucidVariant(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `alias.X` as package `real`'s module X: rewritten (torch -> lucid, real -> alias) when X
    is under one of `rewritten` (or a package above one), else the installed module itself."""

    def __init__(self, alias: str, real: str, rewritten: tuple[str, ...]):
        self.alias, self.real, self.rewritten = alias, real, rewritten
        self.root = Path(importlib.util.find_spec(real).origin).parent

    def _is_rewritten(self, relative: str) -> bool:
        return any(relative == r or relative.startswith(r + ".") or r.startswith(relative + ".") or not relative
                   for r in self.rewritten)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.alias and not fullname.startswith(self.alias + "."):
            return None
        relative = fullname[len(self.alias) + 1:]
        is_package = (self.root / relative.replace(".", "/") / "__init__.py").exists()
        spec = importlib.util.spec_from_loader(fullname, self, is_package=is_package)
        if is_package:
            spec.submodule_search_locations = []
        return spec

    def create_module(self, spec):
        return _LazyPackage(spec.name) if spec.submodule_search_locations is not None else None

    def exec_module(self, module):
        relative = module.__name__[len(self.alias) + 1:]
        if not self._is_rewritten(relative):     # the installed module stands for itself
            sys.modules[module.__name__] = importlib.import_module(f"{self.real}.{relative}")
            return
        path = self.root / relative.replace(".", "/")
        if isinstance(module, _LazyPackage):
            module._init = self._rewrite(relative, (path / "__init__.py").read_text())
            return
        source = self._rewrite(relative, path.with_suffix(".py").read_text())
        exec(compile(source, str(path.with_suffix(".py")), "exec"), module.__dict__)

    def _rewrite(self, relative: str, source: str) -> str:
        for package, module, text, replacement in EDITS:
            if (package, module) == (self.real, relative):
                source = source.replace(text, replacement)
        source = re.sub(r"\btorch\b", "lucid", source)
        return re.sub(rf"\b{self.real}\b", self.alias, source)


def lucid_variant(alias: str, real: str, rewritten: tuple[str, ...]):
    if not any(isinstance(f, LucidVariant) and f.alias == alias for f in sys.meta_path):
        sys.meta_path.insert(0, LucidVariant(alias, real, rewritten))
    return importlib.import_module(alias)


def assert_same_outputs(make, real_module, lucid_module, shape):
    """`make(module)` built from both, the PyTorch weights loaded strictly, eval-mode outputs equal."""
    torch.manual_seed(0)
    reference = make(real_module).eval()
    model = make(lucid_module).eval()
    model.load_state_dict({k: lucid.tensor(v.numpy()) for k, v in reference.state_dict().items()}, strict=True)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(lucid.tensor(x)).numpy(), expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())
    return model, reference, x


MONAI_NETWORKS = {
    "UNet": (lambda nets: nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                                    num_res_units=2), (2, 1, 16, 16, 16)),
    "BasicUNet": (lambda nets: nets.BasicUNet(spatial_dims=3, in_channels=1, out_channels=2,
                                              features=(4, 4, 8, 8, 16, 4), upsample="nontrainable"),
                  (1, 1, 32, 32, 32)),
    "SegResNet": (lambda nets: nets.SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8,
                                              blocks_down=(1, 2, 2), blocks_up=(1, 1)), (1, 1, 16, 16, 16)),
    "DynUNet": (lambda nets: nets.DynUNet(spatial_dims=3, in_channels=1, out_channels=2, kernel_size=[3, 3, 3],
                                          strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[4, 8, 16],
                                          res_block=True), (1, 1, 16, 16, 16)),
}


@pytest.fixture(scope="module")
def monai_pair():
    monai = pytest.importorskip("monai")
    import monai.networks.nets

    lucid_monai = lucid_variant("lucid_monai", "monai", ("networks.nets", "networks.blocks", "networks.layers"))
    return monai.networks.nets, importlib.import_module(f"{lucid_monai.__name__}.networks.nets")


@pytest.mark.parametrize("name", MONAI_NETWORKS)
def test_monai_networks_match_pytorch(monai_pair, name):
    make, shape = MONAI_NETWORKS[name]
    assert_same_outputs(make, monai_pair[0], monai_pair[1], shape)


def test_monai_unet_compiled_training_step_matches_pytorch(monai_pair):
    make, shape = MONAI_NETWORKS["UNet"]
    model, reference, x = assert_same_outputs(make, monai_pair[0], monai_pair[1], shape)
    model.train(), reference.train()
    y = reference(torch.from_numpy(x))
    (y * y).mean().backward()
    compiled_y = lucid.compile(model)(lucid.tensor(x))
    np.testing.assert_allclose(compiled_y.numpy(), y.detach().numpy(), rtol=1e-4, atol=1e-5)
    (compiled_y * compiled_y).mean().backward()
    gradients = dict(model.named_parameters())
    scale = max(p.grad.abs().max().item() for p in reference.parameters())
    for name, parameter in reference.named_parameters():
        np.testing.assert_allclose(gradients[name].grad.numpy(), parameter.grad.numpy(), rtol=1e-3, atol=1e-4 * scale,
                                   err_msg=name)


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_torchvision_video_resnets_match_pytorch(name):
    try:
        import torchvision.models.video
    except Exception as error:    # not installed, or built for another torch (its operators fail to load)
        pytest.skip(f"torchvision does not import: {error}")

    lucid_torchvision = lucid_variant("lucid_torchvision", "torchvision", ("models.video.resnet",))
    lucid_resnets = importlib.import_module(f"{lucid_torchvision.__name__}.models.video.resnet")
    assert_same_outputs(lambda m: getattr(m, name)(num_classes=5), torchvision.models.video, lucid_resnets,
                        (2, 3, 8, 32, 32))
