"""`size`: one kernel of one work item storing the size (computed from the call's dims when it is
symbolic, `KernelBuilder.extent`) converted to the output's float type."""
from __future__ import annotations

from ...ir.graph import Node
from ..irgen import element_type
from ..lowering import Lowering, lowers


@lowers("size", run_time_extents=True)
def lower_size(lowering: Lowering, node: Node) -> None:
    def body(k, item):
        value = k.b.sitofp(k.extent(node.attrs["size"]), element_type(node.output.dtype))
        k.b.store(value, k.pointer(node.output))

    lowering.kernel("size", 1, body)
