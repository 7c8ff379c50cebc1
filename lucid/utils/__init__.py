"""The part of ``torch.utils`` that model code imports: ``lucid.utils.checkpoint`` and
``lucid.utils.data`` (the ``DistributedSampler``)."""
from . import checkpoint, data  # noqa: F401
