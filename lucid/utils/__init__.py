"""The part of ``torch.utils`` that model code imports: ``lucid.utils.checkpoint``."""
from . import checkpoint  # noqa: F401
