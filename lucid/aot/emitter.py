"""The AOT emitter: a planned graph as a self-contained shared library with a plain C ABI.

`write_library(graph, path, name, golden)` takes the graph as the pipeline left it
(`passes.pipeline.for_inference`: fused and planned; the emitter runs no pass), its shapes concrete
or symbolic (`lucid.dim`: the library then takes its inputs' shapes per call, `N_run_dims`; its
sizes are the C code of `sizes.py`), and the self-test's golden (inputs, outputs) at one or more
sizes, and writes
- `path`: a shared library that needs only libc, libm and libpthread at run time. It links
  * the graph's kernels and entry point (`codegen.build.graph_code` for a position-independent target:
    the same lowering and object cache as the JIT, under their own cache keys),
  * the worker pool's module (`runtime.workers.pool_module`, through the same object cache): calls with
    several threads run on the library's own pool of waiting workers, like `lucid.compile`'s,
  * `aot_runtime.c` (the C ABI: `N_run` or `N_run_dims`, shapes, errors, threads, self-test, weights
    loading), compiled with a generated header of tables (buffer-table layout, shapes, the sizes'
    code, checksums),
  * the weights (parameters and constants, each 64-byte aligned) and the self-test's golden data,
    as read-only data assembled with `.incbin` (no C literal);
  only `N_*` and `lucid_aot_info` are exported (a linker version script hides the rest), and the
  library's calls to its own functions bind to them (`-Bsymbolic`: a second lucid library in the
  process never interposes, and `dladdr` finds this library's own folder);
- `path` with `.h`: the C header;
- with `weights_in_file`, `path` with `.weights` instead of embedded weights: a header (magic, ABI
  version, size, CRC-32; see `lucid.runtime.abi`) and the payload, checked by the library on loading.

The system C compiler (`$CC`, default `cc`) links the library; it is needed at export time only.
Inputs and outputs of the C ABI are float32 arrays; other dtypes are refused.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..ir.graph import Graph
from ..ir.specialize import _origin
from ..ir.types import float32
from ..codegen.build import graph_code, memory_plan_of, written_outputs
from ..codegen.jit import objects
from ..codegen.lowering import BufferTable, buffer_table
from ..codegen.target import Target, host
from ..passes.memory_planning import ALIGNMENT
from ..runtime import abi
from ..runtime.workers import POOL_CPU_COUNT, POOL_CPUS, MAX_CPUS, POOL_WORDS, pool_module
from .sizes import c_string, define_sizes

RUNTIME_SOURCE = Path(__file__).with_name("aot_runtime.c")

#: Self-test tolerance: |got - want| <= ATOL * max|want| + RTOL * |want| (float32 code reassociates sums).
SELFTEST_RTOL, SELFTEST_ATOL = 1e-3, 1e-4

#: CPU features the library checks for at run time (names that LLVM and __builtin_cpu_supports share);
#: a CPU name without a feature string stands for the features of its x86-64 level.
CHECKED_FEATURES = ("popcnt", "sse4.1", "sse4.2", "avx", "avx2", "fma", "bmi", "bmi2",
                    "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
LEVEL_FEATURES = {"x86-64-v2": ("popcnt", "sse4.1", "sse4.2"),
                  "x86-64-v3": ("popcnt", "sse4.1", "sse4.2", "avx", "avx2", "fma", "bmi", "bmi2"),
                  "x86-64-v4": ("popcnt", "sse4.1", "sse4.2", "avx", "avx2", "fma", "bmi", "bmi2",
                                "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")}


@dataclasses.dataclass
class LibraryFiles:
    """What `write_library` wrote."""

    library: Path
    header: Path
    weights: Path | None
    name: str


def write_library(graph: Graph, path, name: str, golden: list, weights_in_file: bool = False,
                  target: Target | None = None) -> LibraryFiles:
    """Write the library, its header and (with `weights_in_file`) its weights file for `graph`, a
    verified, planned inference graph (no state updates) of float32 inputs and outputs; `golden` holds
    the self-test's (inputs, outputs) pairs, one per size it checks."""
    _check_exportable(graph, name)
    compiler = c_compiler()
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"lucid.export: folder {str(path.parent)!r} does not exist")
    target = dataclasses.replace(target or host(), pic=True)
    plan = memory_plan_of(graph, dynamic=True)
    table = buffer_table(graph, plan)
    code = graph_code(graph, plan, target)
    weights, weight_offsets = _blob([np.asarray(graph.bindings[v.name], v.dtype.numpy) for v in graph.params]
                                    + [array for _, array in table.constants])
    golden_data, golden_offsets = _blob([np.asarray(a, np.float32) for inputs, outputs in golden
                                         for a in list(inputs) + list(outputs)])
    files = LibraryFiles(path, path.with_suffix(".h"), path.with_suffix(abi.WEIGHTS_SUFFIX) if weights_in_file else None, name)
    tables = _model_tables(graph, plan, table, name, target, code.workspace_bytes, weights_in_file)
    tables.define_data(table, weights, weight_offsets, files.weights)
    tables.define_golden(golden, golden_offsets)
    blobs = {"lucid_golden": golden_data} if weights_in_file else {"lucid_weights": weights, "lucid_golden": golden_data}
    with tempfile.TemporaryDirectory(prefix="lucid-export-") as folder:
        built = _link(compiler, Path(folder), tables, code.objects + [_pool_object(target)], blobs, name, path.name)
        if files.weights is not None:
            _replace(files.weights, _weights_file(weights))
        _replace(files.header, header_text(graph, name, weights_in_file).encode())
        _replace(path, built.read_bytes())
    return files


def c_compiler() -> str:
    """The C compiler that links libraries (`$CC`, else `cc`), or a clear error."""
    wanted = os.environ.get("CC", "cc")
    found = shutil.which(wanted)
    if not found:
        raise ExportError(f"lucid.export: no C compiler found (looked for {wanted!r}, set CC to choose one); "
                          "exporting links the library with the system C compiler")
    return found


def _check_exportable(graph: Graph, name: str) -> None:
    if not abi.is_c_name(name):
        raise ExportError(f"lucid.export: name must be a C identifier (letters, digits, _), got {name!r}")
    if graph.state_updates:
        raise ExportError(f"lucid.export: {graph.name} updates state ({', '.join(graph.state_updates)}); "
                          "an exported library runs inference only (export the module in eval mode)")
    for what, values in (("input", graph.inputs), ("output", graph.outputs)):
        for k, v in enumerate(values):
            if v.dtype != float32:
                raise ExportError(f"lucid.export: {graph.name} {what} {k} ({v.name!r}) has dtype {v.dtype}; "
                                  "the C ABI passes float32 arrays only")


def _blob(arrays: list) -> tuple[bytes, list[int]]:
    """The arrays' bytes one after the other, each at a 64-byte aligned offset; and the offsets."""
    parts, offsets, size = [], [], 0
    for array in arrays:
        data = np.ascontiguousarray(array).tobytes()
        offsets.append(size)
        padding = -len(data) % ALIGNMENT
        parts.append(data + b"\0" * padding)
        size += len(data) + padding
    return b"".join(parts), offsets


def _weights_file(weights: bytes) -> bytes:
    header = abi.WEIGHTS_HEADER.pack(abi.WEIGHTS_MAGIC, abi.ABI_VERSION, len(weights), zlib.crc32(weights))
    return header.ljust(abi.WEIGHTS_HEADER_BYTES, b"\0") + weights


class _Tables:
    """A generated C header: macros and constant arrays."""

    def __init__(self, comment: str):
        self.lines = [f"/* {comment} */", "#include <stdint.h>"]

    def define(self, macro: str, value) -> None:
        self.lines.append(f"#define {macro} {value}")

    def array(self, name: str, ctype: str, values: list) -> None:
        """`static const ctype name[] = {...}`, with one 0 when empty (C has no empty arrays)."""
        self.lines.append(f"static const {ctype} {name}[] = {{{', '.join(map(str, values)) or '0'}}};")

    def define_data(self, table: BufferTable, weights: bytes, weight_offsets: list, weights_path: Path | None) -> None:
        """Where parameters and constants are in the weights (in table order), the weights' size,
        CRC-32 and file."""
        self.array("fixed_slot", "int", [slot for _, slot in table.params] + [slot for slot, _ in table.constants])
        self.array("fixed_offset", "int64_t", weight_offsets)
        self.define("LUCID_NUM_FIXED", len(weight_offsets))
        self.define("LUCID_WEIGHTS_IN_FILE", int(weights_path is not None))
        self.define("LUCID_WEIGHTS_BYTES", f"{len(weights)}ull")
        self.define("LUCID_WEIGHTS_CRC32", f"{zlib.crc32(weights)}u")
        self.define("LUCID_WEIGHTS_MAGIC", c_string(abi.WEIGHTS_MAGIC.decode()))
        self.define("LUCID_WEIGHTS_HEADER_BYTES", abi.WEIGHTS_HEADER_BYTES)
        self.define("LUCID_WEIGHTS_FIELD_BYTES", abi.WEIGHTS_HEADER.size)
        self.define("LUCID_WEIGHTS_FILE", c_string(weights_path.name if weights_path else ""))

    def define_golden(self, golden: list, offsets: list) -> None:
        """The self-test's size sets: each one's input shapes (concatenated), and where its golden
        inputs and outputs are in the golden data (`offsets`, in the order of `golden`'s arrays)."""
        self.define("LUCID_NUM_GOLDEN", len(golden))
        self.array("golden_shapes", "int64_t", [d for inputs, _ in golden for a in inputs for d in np.shape(a)])
        at, inputs_at, outputs_at = iter(offsets), [], []
        for inputs, outputs in golden:
            inputs_at += [next(at) for _ in inputs]
            outputs_at += [next(at) for _ in outputs]
        self.array("golden_input_offset", "int64_t", inputs_at)
        self.array("golden_output_offset", "int64_t", outputs_at)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _model_tables(graph: Graph, plan, table: BufferTable, name: str, target: Target, workspace_bytes: int,
                  weights_in_file: bool) -> _Tables:
    """The tables `aot_runtime.c` is compiled with: the model's name and shapes, its buffer table's
    layout (see `lowering.buffer_table`), the CPU features it needs, the self-test tolerance."""
    tables = _Tables("generated by lucid.export: the tables of one model, for aot_runtime.c")
    features = _required_features(target)
    tables.define("LUCID_MODEL", name)
    tables.define("LUCID_NAME", c_string(name))
    tables.define("LUCID_INFO", c_string(abi.info_text(name, weights_in_file, graph.returns_tuple, bool(table.symbols))))
    tables.define("LUCID_ABI_VERSION", abi.ABI_VERSION)
    tables.define("LUCID_NUM_INPUTS", len(graph.inputs))
    tables.define("LUCID_NUM_OUTPUTS", len(graph.outputs))
    tables.define("LUCID_TABLE_SIZE", table.size)
    tables.define("LUCID_WORKSPACE_SLOT", table.workspace_slot)
    tables.define("LUCID_PERSISTENT_SLOT", table.persistent_slot)
    tables.define("LUCID_DIMS_SLOT", table.dims_slot)
    tables.define("LUCID_WORKSPACE_BYTES", f"{workspace_bytes}ll")
    tables.define("LUCID_CPU_SUPPORTED()", "(" + " && ".join(
        [f'__builtin_cpu_supports("{f}")' for f in features] or ["1"]) + ")")
    tables.define("LUCID_CPU_FEATURES", c_string(", ".join(features) or "no extra features"))
    tables.define("LUCID_SELFTEST_RTOL", f"{SELFTEST_RTOL!r}f")
    tables.define("LUCID_SELFTEST_ATOL", f"{SELFTEST_ATOL!r}f")
    tables.array("input_slot", "int", table.inputs)
    tables.array("output_slot", "int", table.outputs)
    tables.array("output_source", "int", [-1 if written else table.slots[plan.root(v)]
                                          for v, written in zip(graph.outputs, written_outputs(graph))])
    tables.array("arena_slot", "int", list(table.arena))
    tables.define("LUCID_NUM_ARENA", len(table.arena))
    define_sizes(tables, graph, plan, table)
    _define_pool_layout(tables)
    return tables


def _pool_object(target: Target) -> bytes:
    """The worker pool's object code for `target` (from the object cache when present)."""
    return objects([("lucid_pool", str(pool_module(target.triple)))], target)[0][1]


def _define_pool_layout(tables: _Tables) -> None:
    """The pool block's size and where its CPU list is (the runtime fills it on first use)."""
    tables.define("LUCID_POOL_WORDS", POOL_WORDS)
    tables.define("LUCID_POOL_CPU_COUNT", POOL_CPU_COUNT)
    tables.define("LUCID_POOL_CPUS", POOL_CPUS)
    tables.define("LUCID_POOL_MAX_CPUS", MAX_CPUS)


def _required_features(target: Target) -> list[str]:
    if target.features:
        enabled = {f[1:] for f in target.features.split(",") if f.startswith("+")}
        return [f for f in CHECKED_FEATURES if f in enabled]
    return list(LEVEL_FEATURES.get(target.cpu, ()))


def _write_objects(work: Path, objects: list[bytes]) -> list[str]:
    paths = []
    for k, code in enumerate(objects):
        paths.append(str(work / f"module{k}.o"))
        Path(paths[-1]).write_bytes(code)
    return paths


def _assembly(work: Path, blobs: dict) -> str:
    """Read-only data symbols (hidden, 64-byte aligned) holding each blob, included with .incbin."""
    lines = ['\t.section .rodata.lucid,"a",@progbits']
    for symbol, data in blobs.items():
        (work / f"{symbol}.bin").write_bytes(data)
        lines += [f"\t.balign {ALIGNMENT}", f"\t.globl {symbol}", f"\t.hidden {symbol}", f"{symbol}:",
                  f'\t.incbin "{work / (symbol + ".bin")}"', "\t.byte 0"]
    lines.append('\t.section .note.GNU-stack,"",@progbits')
    return "\n".join(lines) + "\n"


def _link(compiler: str, work: Path, tables: _Tables, objects: list[bytes], blobs: dict, name: str,
          file_name: str) -> Path:
    """Compile aot_runtime.c with the tables and link it with the objects and data in `work`; the
    library's path. Only `name_*` and the info function are exported."""
    (work / "tables.h").write_text(tables.text())
    (work / "data.S").write_text(_assembly(work, blobs))
    (work / "exports.map").write_text(f"{{ global: {name}_*; {abi.INFO_SYMBOL}; local: *; }};\n")
    out = work / file_name
    command = [compiler, "-shared", "-fPIC", "-O2", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra",
               f'-DLUCID_TABLES="{work / "tables.h"}"', str(RUNTIME_SOURCE), str(work / "data.S"),
               *_write_objects(work, objects), "-o", str(out),
               f"-Wl,--version-script={work / 'exports.map'}", f"-Wl,-soname,{file_name}",
               "-Wl,-Bsymbolic", "-Wl,-z,noexecstack", "-Wl,-z,defs", "-lm", "-lpthread"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportError(f"lucid.export: linking the library with {compiler} failed:\n{done.stderr[-4000:]}")
    return out


def _replace(path: Path, data: bytes) -> None:
    """Write `path` through a new file renamed over it: a process that has the old library loaded
    keeps its mapping intact."""
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}.") as f:
        f.write(data)
    os.chmod(f.name, 0o755 if path.suffix == ".so" else 0o644)
    os.replace(f.name, path)


def header_text(graph: Graph, name: str, weights_in_file: bool) -> str:
    """The C header of a library: the ABI's functions and the model's shapes."""
    guard, upper = f"LUCID_{name.upper()}_H", name.upper()
    symbols = sorted(s.name for s in graph.symbols())
    lines = [f"/* {name}: inference for {graph.name}, generated by lucid.export (lucid AOT ABI {abi.ABI_VERSION}).", " *"]
    lines += _symbolic_call_comment(graph, name, symbols) if symbols else _concrete_call_comment(graph, name)
    lines += [" * It returns 0, or -1 with the reason in {0}_last_error() (thread-local). It may be called from".format(name),
              " * several threads at once; each call uses {0}_set_num_threads() threads (default: every core).".format(name),
              " */", f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
              "#ifdef __cplusplus", 'extern "C" {', "#endif", ""]
    lines += _macros(graph, upper, symbols) + [""] + _declarations(name, symbols, weights_in_file)
    lines += ["", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {guard} */"]
    return "\n".join(lines) + "\n"


def _macros(graph: Graph, upper: str, symbols: list) -> list[str]:
    lines = [f"#define {upper}_ABI_VERSION {abi.ABI_VERSION}",
             f"#define {upper}_NUM_INPUTS {len(graph.inputs)}",
             f"#define {upper}_NUM_OUTPUTS {len(graph.outputs)}"]
    if symbols:
        return lines + [f"#define {upper}_INPUT_DIMS {sum(len(v.shape) for v in graph.inputs)}   /* values in shapes */"]
    for what, values in (("INPUT", graph.inputs), ("OUTPUT", graph.outputs)):
        for k, v in enumerate(values):
            lines.append(f"#define {upper}_{what}{k}_ELEMENTS {v.type.size}")
    return lines


def _declarations(name: str, symbols: list, weights_in_file: bool) -> list[str]:
    lines = [f"int {name}_run(const float *const *inputs, float *const *outputs);"]
    if symbols:
        lines += [f"int {name}_run_dims(const int64_t *shapes, const float *const *inputs, float *const *outputs);",
                  f"int {name}_output_shape_dims(const int64_t *shapes, int i, int64_t *dims);  /* the rank, or -1 */"]
    lines += [f"int {name}_num_inputs(void);",
              f"int {name}_num_outputs(void);",
              f"int {name}_input_shape(int i, int64_t *dims);    /* returns the rank; dims may be NULL */",
              f"int {name}_output_shape(int i, int64_t *dims);",
              f"const char *{name}_last_error(void);",
              f"void {name}_set_num_threads(int threads);        /* 0: automatic */",
              f"int {name}_selftest(void);                       /* 0: the golden inputs give the golden outputs */",
              f"int {name}_abi_version(void);                    /* {name.upper()}_ABI_VERSION of the library */"]
    if weights_in_file:
        lines.append(f"int {name}_load_weights(const char *path);   /* NULL: the .weights file beside the library */")
    return lines + [f"const char *{abi.INFO_SYMBOL}(void);               /* \"{abi.INFO_PREFIX} abi=... name=...\" */"]


def _shape_lines(graph: Graph) -> list[str]:
    lines = []
    for what, values in (("input", graph.inputs), ("output", graph.outputs)):
        for k, v in enumerate(values):
            lines.append(f" *   {what} {k}{f' ({v.name})' if v.name else ''}: float32 [{', '.join(map(str, v.shape))}]")
    return lines


def _concrete_call_comment(graph: Graph, name: str) -> list[str]:
    return [f" * {name}_run(inputs, outputs) reads {len(graph.inputs)} float32 array(s) and writes "
            f"{len(graph.outputs)}, C-contiguous:"] + _shape_lines(graph)


def _symbolic_call_comment(graph: Graph, name: str, symbols: list) -> list[str]:
    """What a library of symbolic dimensions takes: the shapes array, the ranges and constraints."""
    by_name = {s.name: s for s in graph.symbols()}
    ranges = "; ".join(f"{s} >= {by_name[s].min}" + ("" if by_name[s].max is None else f" and <= {by_name[s].max}")
                       for s in symbols)
    lines = [f" * The model has symbolic dimensions ({', '.join(symbols)}): one library serves every size that",
             " * meets their ranges and constraints.",
             f" * {name}_run_dims(shapes, inputs, outputs) reads {len(graph.inputs)} float32 array(s) and writes "
             f"{len(graph.outputs)}, C-contiguous,",
             f" * of the sizes in `shapes`: every input's full shape, concatenated in input order "
             f"({name.upper()}_INPUT_DIMS int64s):"]
    lines += _shape_lines(graph)
    lines += [f" * Ranges: {ranges}."]
    lines += [f" * Constraint: {c} (required by {_origin(node)})." for c, node in graph.constraints]
    lines += [f" * Before any kernel runs, {name}_run_dims reads each dimension from the first input axis that is",
              " * that dimension alone and checks its range, the constraints and every dim in `shapes` (a",
              " * refusal names the dimension and the constraint). The library sizes each call's scratch",
              " * memory itself; the caller allocates the outputs, of the shapes",
              f" * {name}_output_shape_dims(shapes, i, dims) writes (it checks `shapes` likewise).",
              f" * {name}_input_shape and {name}_output_shape report a symbolic dimension as -1; {name}_run",
              f" * (without shapes) refuses to run this model. {name}_selftest runs two sizes (one when a range",
              " * holds a single size)."]
    return lines
