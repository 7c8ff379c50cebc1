"""Real model code on lucid, taken as its users have it: the INSTALLED sources of MONAI's networks and
torchvision's video ResNets, read from site-packages at import time with the word `torch` replaced by
`lucid` (nothing of theirs is kept in this repository). Used by tests/test_real_models.py (each
network against PyTorch's) and benchmarks/networks.py (MONAI's networks as whole-network rows).

    monai_nets, lucid_nets = monai_networks()      # monai.networks.nets and its lucid rewrite
    model = lucid_nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32), strides=(2,))

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


def monai_networks():
    """(monai.networks.nets, its lucid rewrite); ImportError when MONAI is not installed."""
    import monai.networks.nets

    lucid_monai = lucid_variant("lucid_monai", "monai", ("networks.nets", "networks.blocks", "networks.layers"))
    return monai.networks.nets, importlib.import_module(f"{lucid_monai.__name__}.networks.nets")


def torchvision_video_resnets():
    """(torchvision.models.video, the lucid rewrite of its resnet module); any exception torchvision's
    import raises (not installed, or built for another torch) propagates."""
    import torchvision.models.video

    lucid_torchvision = lucid_variant("lucid_torchvision", "torchvision", ("models.video.resnet",))
    return torchvision.models.video, importlib.import_module(f"{lucid_torchvision.__name__}.models.video.resnet")
