"""lucid.nn: modules, parameters, initialisers and the functional API."""
from . import functional, init, parallel
from .module import Module
from .modules import *  # noqa: F401,F403  (the layer classes)
from .parameter import Parameter
