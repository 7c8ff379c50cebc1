"""The file format and C ABI of the libraries `lucid.export` writes: the one thing the exporter
(`lucid/aot/emitter.py`) and the runtime (`lucid.runtime`) share. Imports nothing but the standard
library.

A library exports, besides the model's `N_*` functions (see the generated header),
`const char *lucid_aot_info(void)` returning `"lucid-aot abi=<ABI_VERSION> name=<N> weights=<embedded|file>
outputs=<single|tuple>"`, followed by ` shapes=symbolic` for a library of a graph with symbolic
dimensions (its calls take the inputs' shapes: `N_run_dims`, `N_output_shape_dims`; its
`N_input_shape` reports a symbolic dimension as -1). A separate weights file starts with a WEIGHTS_HEADER_BYTES header: the magic,
the ABI version (u32), the payload's size (u64) and CRC-32 (u32), all little-endian, then zeros; the
payload follows.
"""
from __future__ import annotations

import re
import struct

ABI_VERSION = 1
INFO_SYMBOL = "lucid_aot_info"
INFO_PREFIX = "lucid-aot"

WEIGHTS_MAGIC = b"LUCIDWTS"
WEIGHTS_HEADER = struct.Struct("<8sIQI")          # magic, ABI version, payload bytes, payload CRC-32
WEIGHTS_HEADER_BYTES = 64
WEIGHTS_SUFFIX = ".weights"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def info_text(name: str, weights_in_file: bool, returns_tuple: bool, symbolic_shapes: bool = False) -> str:
    return (f"{INFO_PREFIX} abi={ABI_VERSION} name={name} weights={'file' if weights_in_file else 'embedded'} "
            f"outputs={'tuple' if returns_tuple else 'single'}" + (" shapes=symbolic" if symbolic_shapes else ""))


def parse_info(text: str) -> dict:
    """The fields of an info string (`{'abi': '1', 'name': ..., ...}`); {} if it is not one."""
    words = text.split()
    if not words or words[0] != INFO_PREFIX:
        return {}
    return dict(word.partition("=")[::2] for word in words[1:])


def c_name(text: str) -> str:
    """`text` made a valid C identifier (the default name of a library is its file's stem)."""
    name = re.sub(r"\W", "_", text, flags=re.ASCII) or "model"
    if name[0].isdigit():
        name = "_" + name
    return name


def is_c_name(text: str) -> bool:
    return bool(_IDENTIFIER.match(text))
