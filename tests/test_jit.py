"""lucid.jit: model code written for torch.jit imports and runs, eagerly and traced."""
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

import lucid
from lucid import jit, nn


class Block(nn.Module):
    depth: jit.Final[int]

    def __init__(self):
        super().__init__()
        self.depth = 2
        self.conv = nn.Conv3d(2, 2, 3, padding=1)
        self.traced_flags = []

    @jit.ignore
    def helper(self, x):
        return x

    @jit.unused
    def debug(self):
        return "unused"

    @jit.ignore(drop=True)
    def dropped(self):
        return "dropped"

    @jit.export
    def extra(self, x):
        return x * 2

    def forward(self, x):
        self.traced_flags.append((jit.is_scripting(), jit.is_tracing()))
        skips: List[lucid.Tensor] = [x]
        if jit.isinstance(skips, List[lucid.Tensor]) and not jit.is_scripting():
            x = self.conv(self.helper(x)) + skips[0]
        return self.extra(x)


def test_model_code_using_jit_imports_and_runs():
    model = jit.script(Block())
    assert isinstance(model, Block) and model.debug() == "unused" and model.dropped() == "dropped"
    x = lucid.randn(1, 2, 4, 4, 4)
    eager = model(x)
    assert model.traced_flags == [(False, False)]
    graph = lucid.trace(model, lucid.spec(1, 2, 4, 4, 4))
    assert model.traced_flags[-1] == (False, True)
    np.testing.assert_allclose(lucid.ir.run(graph, x.data), eager.data, rtol=1e-5, atol=1e-6)
    compiled = lucid.compile(jit.trace(model, x))
    np.testing.assert_allclose(compiled(x).data, eager.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("obj,kind,expected", [
    ([lucid.zeros(1)], List[lucid.Tensor], True),
    ([lucid.zeros(1), 3], List[lucid.Tensor], False),
    ({"a": lucid.zeros(1)}, Dict[str, lucid.Tensor], True),
    ({1: lucid.zeros(1)}, Dict[str, lucid.Tensor], False),
    ((1, "a"), Tuple[int, str], True),
    ((1, 2), Tuple[int, str], False),
    ((1, 2, 3), Tuple[int, ...], True),
    (None, Optional[int], True),
    (3, Optional[int], True),
    ("x", Optional[int], False),
    (3, int, True),
    ([1], list, True),
])
def test_isinstance_takes_typing_generics(obj, kind, expected):
    assert jit.isinstance(obj, kind) is expected


def test_torch_jit_agrees_where_installed():
    torch = pytest.importorskip("torch")
    for obj, kind in [([1, 2], List[int]), ({"a": 1}, Dict[str, int]), ((1, "a"), Tuple[int, str]),
                      (None, Optional[int]), ([1, "a"], List[int])]:
        assert jit.isinstance(obj, kind) == torch.jit.isinstance(obj, kind)
