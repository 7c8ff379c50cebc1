"""Optimisers: ``lucid.optim.SGD`` and ``lucid.optim.Adam`` on the ``Optimizer`` base class."""
from .adam import Adam
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam"]
