"""Containers edited as PyTorch's are (set, delete, slice, insert, pop), checked against a Python list
of the same modules and against PyTorch's state-dict keys; and `load_state_dict`, which changes
nothing unless the whole state dict fits, and copies into the existing tensors."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid import ShapeError


def layers(n: int) -> list:
    return [nn.Linear(i + 1, i + 2) for i in range(n)]


def chain(n: int) -> nn.Sequential:
    return nn.Sequential(*layers(n))


# ----------------------------------------------------------------------------------------------
# Sequential and ModuleList: the same edits as on a list


EDITS = {
    "set": lambda c, m: c.__setitem__(1, m),
    "set negative": lambda c, m: c.__setitem__(-1, m),
    "delete": lambda c, m: c.__delitem__(1),
    "delete negative": lambda c, m: c.__delitem__(-2),
    "delete slice": lambda c, m: c.__delitem__(slice(1, 3)),
    "delete step": lambda c, m: c.__delitem__(slice(None, None, 2)),
    "append": lambda c, m: c.append(m),
    "insert front": lambda c, m: c.insert(0, m),
    "insert middle": lambda c, m: c.insert(2, m),
    "insert negative": lambda c, m: c.insert(-1, m),
    "insert end": lambda c, m: c.insert(len(c), m),
    "extend": lambda c, m: c.extend(iter([m])),
    "pop": lambda c, m: c.pop(1),
    "pop last": lambda c, m: c.pop(-1),
}


@pytest.mark.parametrize("kind", [nn.Sequential, nn.ModuleList])
@pytest.mark.parametrize("edit", list(EDITS))
def test_edits_act_as_on_a_list_and_renumber(kind, edit):
    modules = layers(4)
    container = kind(*modules) if kind is nn.Sequential else kind(modules)
    new = nn.Tanh()
    reference = list(modules)
    EDITS[edit](reference, new)
    EDITS[edit](container, new)
    assert len(container) == len(reference)
    assert all(a is b for a, b in zip(container, reference))
    assert list(container._modules) == [str(i) for i in range(len(reference))]
    assert all(container[i] is reference[i] for i in range(-len(reference), len(reference)))


@pytest.mark.parametrize("edit", list(EDITS))
def test_state_dict_keys_follow_pytorch_after_each_edit(edit):
    torch = pytest.importorskip("torch")
    ours, theirs = chain(4), torch.nn.Sequential(*[torch.nn.Linear(i + 1, i + 2) for i in range(4)])
    EDITS[edit](ours, nn.Linear(2, 2))
    EDITS[edit](theirs, torch.nn.Linear(2, 2))
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_sequential_runs_what_it_holds_after_an_edit():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    x = lucid.randn(4, 3)
    model[1] = nn.Identity()
    np.testing.assert_allclose(model(x).numpy(), model[2](model[0](x)).numpy(), rtol=1e-6)
    del model[-1]
    assert model(x).shape == (4, 3)
    model.insert(1, nn.Tanh())
    np.testing.assert_allclose(model(x).numpy(), np.tanh(model[0](x).numpy()), rtol=1e-6)


def test_a_slice_of_a_sequential_is_a_sequential_with_the_same_names():
    named = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), act=nn.ReLU(), pool=nn.MaxPool2d(2)))
    head = named[:2]
    assert isinstance(head, nn.Sequential) and list(head._modules) == ["conv", "act"]
    assert head.conv is named.conv and named[-1] is named.pool
    assert isinstance(named[::2], nn.Sequential) and list(named[::2]._modules) == ["conv", "pool"]
    tail = nn.ModuleList(layers(3))[1:]
    assert isinstance(tail, nn.ModuleList) and list(tail._modules) == ["0", "1"]


@pytest.mark.parametrize("kind", [nn.Sequential, nn.ModuleList])
def test_bad_positions_and_values_are_refused(kind):
    container = kind(*layers(2)) if kind is nn.Sequential else kind(layers(2))
    name = kind.__name__
    with pytest.raises(IndexError, match=f"{name}: index 2 is out of range for 2 modules"):
        container[2]
    with pytest.raises(IndexError, match="index -3"):
        container[-3] = nn.ReLU()
    with pytest.raises(IndexError):
        del container[5]
    with pytest.raises(IndexError, match=f"{name}.insert: index 3"):
        container.insert(3, nn.ReLU())
    with pytest.raises(TypeError, match=f"{name}: expected a Module, got int"):
        container[0] = 3
    with pytest.raises(TypeError, match="indices must be integers or slices, got str"):
        container["0"]
    assert len(container) == 2


def test_module_list_adds_in_place():
    items = nn.ModuleList(layers(1))
    items += [nn.ReLU()]
    assert len(items) == 2 and isinstance(items[1], nn.ReLU)


def test_module_dict_edits():
    table = nn.ModuleDict({"a": nn.ReLU(), "b": nn.Tanh()})
    table.update([("c", nn.Identity())])
    table.update({"a": nn.Sigmoid()})
    assert list(table) == ["a", "b", "c"] and isinstance(table["a"], nn.Sigmoid)
    del table["b"]
    assert "b" not in table and list(table.keys()) == ["a", "c"]
    assert isinstance(table.pop("c"), nn.Identity) and len(table) == 1
    table.clear()
    assert len(table) == 0 and list(table.children()) == []
    with pytest.raises(TypeError, match="ModuleDict: expected a Module"):
        table["x"] = "relu"


# ----------------------------------------------------------------------------------------------
# load_state_dict


def lazy_model():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.LazyConv2d(4, 3), nn.Flatten(), nn.LazyLinear(2))


def full_state() -> dict:
    lucid.manual_seed(1)
    source = lazy_model()
    source(lucid.randn(1, 1, 9, 9))
    return {k: v + 1.0 if v.dtype.kind == "f" else v for k, v in source.state_dict().items()}


def snapshot(model) -> dict:
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_untouched(model, before: dict) -> None:
    assert model[2].in_channels is None and model[2].weight is None
    assert model[4].in_features is None and model[4].weight is None
    after = model.state_dict()
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.parametrize("damage, strict", [
    (lambda s: s.pop("4.bias"), True),                                   # missing key
    (lambda s: s.update(extra=np.zeros(1)), True),                       # unexpected key
    (lambda s: s.update({"0.weight": np.zeros((3, 1, 2, 2))}), True),    # wrong shape of a plain layer
    (lambda s: s.update({"0.weight": np.zeros((3, 1, 2, 2))}), False),
    (lambda s: s.update({"4.bias": np.zeros(3)}), True),                 # wrong shape of a lazy layer's bias
    (lambda s: s.update({"4.bias": np.zeros(3)}), False),
    (lambda s: s.update({"2.weight": np.zeros((4, 3, 3))}), False),      # wrong rank for a lazy conv
    (lambda s: s.update({"2.weight": np.zeros((4, 3, 3, 3), dtype=object)}), False),
], ids=["missing", "unexpected", "shape-strict", "shape", "lazy-bias-strict", "lazy-bias", "lazy-rank", "lazy-dtype"])
def test_a_refused_state_dict_changes_nothing(damage, strict):
    model = lazy_model()
    before = snapshot(model)
    state = full_state()
    damage(state)
    with pytest.raises(ValueError):
        model.load_state_dict(state, strict=strict)
    assert_untouched(model, before)


def test_a_fitting_state_dict_materialises_and_copies_into_the_same_tensors():
    model = lazy_model()
    conv_weight = model[0].weight
    state = full_state()
    assert model.load_state_dict(state) == ([], [])
    assert model[0].weight is conv_weight
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key])


def test_a_compiled_model_sees_loaded_weights():
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)).eval()
    x = lucid.randn(2, 1, 5, 5)
    fast = lucid.compile(model)
    fast(x)
    state = {k: v * 0.5 - 0.1 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    with lucid.no_grad():
        np.testing.assert_allclose(fast(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key])


def test_non_strict_loading_reports_and_still_loads_the_rest():
    model = lazy_model()
    state = full_state()
    del state["0.bias"]
    missing, unexpected = model.load_state_dict(dict(state, extra=np.zeros(1)), strict=False)
    assert missing == ["0.bias"] and unexpected == ["extra"]
    assert model[2].in_channels == 3 and model[4].in_features == 4 * 5 * 5
    np.testing.assert_array_equal(model[4].weight.numpy(), state["4.weight"])


def test_strict_error_lists_every_missing_and_unexpected_key():
    model = lazy_model()
    state = full_state()
    del state["0.bias"], state["4.bias"]
    with pytest.raises(ShapeError) as info:
        model.load_state_dict(dict(state, extra=np.zeros(1), other=np.zeros(2)))
    message = str(info.value)
    assert "Sequential.load_state_dict" in message
    assert all(f"'{key}'" in message for key in ("0.bias", "4.bias", "extra", "other"))
