"""A module or parameter reachable by several attribute paths: state dicts list it under every path,
parameters() and named_parameters() list it once (PyTorch's rule), and strict loading takes
PyTorch's key list."""
import numpy as np
import pytest

import lucid
from lucid import nn


def build(nn, Parameter):
    """The same model in lucid or torch: a shared submodule (as DynUNet's deep-supervision heads),
    a parameter shared by two layers, and a module registered twice under one parent."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2))
            self.heads = nn.ModuleList([nn.Conv3d(2, 1, 1)])
            self.output = self.heads[0]                      # second path to the same head
            self.extra = nn.Sequential(self.encoder[1], nn.Linear(3, 3))
            self.tied = nn.Linear(3, 3)
            self.tied.weight = self.extra[1].weight           # one Parameter, two owners
            self.scale = Parameter(np.ones(2, dtype=np.float32) if nn.__name__.startswith("lucid")
                                   else __import__("torch").ones(2))
    return Net()


def lucid_net():
    return build(nn, nn.Parameter)


def test_state_dict_lists_every_path_and_parameters_come_once():
    net = lucid_net()
    keys = list(net.state_dict())
    assert "heads.0.weight" in keys and "output.weight" in keys
    assert "encoder.1.running_mean" in keys and "extra.0.running_mean" in keys
    assert "tied.weight" in keys and "extra.1.weight" in keys
    names = [n for n, _ in net.named_parameters()]
    assert "output.weight" not in names and "tied.weight" not in names and "extra.0.weight" not in names
    assert len(list(net.parameters())) == len({id(p) for p in net.parameters()}) == len(names)
    all_names = [n for n, _ in net.named_parameters(remove_duplicate=False)]
    assert set(all_names) == {k for k in keys if "running" not in k and "num_batches" not in k}
    assert [n for n, _ in net.named_modules()].count("output") == 0
    assert "output" in [n for n, _ in net.named_modules(remove_duplicate=False)]


def test_key_lists_equal_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = lucid_net(), build(torch.nn, torch.nn.Parameter)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert ([n for n, _ in ours.named_parameters(remove_duplicate=False)]
            == [n for n, _ in theirs.named_parameters(remove_duplicate=False)])
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert ([n for n, _ in ours.named_modules(remove_duplicate=False)]
            == [n for n, _ in theirs.named_modules(remove_duplicate=False)])
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]


def test_strict_load_of_a_torch_state_dict():
    torch = pytest.importorskip("torch")
    theirs = build(torch.nn, torch.nn.Parameter)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    ours = lucid_net()
    assert ours.load_state_dict(state) == ([], [])
    np.testing.assert_array_equal(ours.output.weight.data, theirs.output.weight.detach().numpy())
    assert ours.output is ours.heads[0] and ours.tied.weight is ours.extra[1].weight


def test_strict_load_needs_every_path():
    net = lucid_net()
    state = net.state_dict()
    del state["output.weight"]
    with pytest.raises(lucid.ShapeError, match="missing keys \\['output.weight'\\]"):
        net.load_state_dict(state)
    state = lucid_net().state_dict()
    assert lucid_net().load_state_dict(state) == ([], [])
