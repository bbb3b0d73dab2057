"""What an artifact holds: format facts, gatex ops and metadata, and per-weight size and sparsity.

`inspect_artifact` reads an ONNX file (``.onnx``, external data included) or a CoreML package
(``.mlpackage``, through `gatex.artifacts.mlprogram`) without running it. A
missing or unreadable file is one `BadInputError` line (exit 2).

``gatex inspect --json`` prints `ArtifactInfo.to_json`; its keys are stable:

- ``path`` (str), ``format`` (``"onnx"`` or ``"mlpackage"``), ``file_bytes`` (int: the file,
  or every file of the package, plus ONNX external data files)
- ``metadata`` ({str: str}: ONNX ``metadata_props`` or CoreML user-defined metadata; gatex's
  keys start ``gatex.``)
- ``opsets`` ({domain: version}; ``""`` is the default ONNX domain; {} for CoreML)
- ``ir_version`` (int or null: ONNX IR version; CoreML: the spec version)
- ``custom_ops`` ({"domain::op": count}: nodes outside the standard ONNX domains; {} for CoreML)
- ``ops`` ({op: count}: every node of the main graph or MIL program by type)
- ``functions`` ([str]: ONNX model-local functions as "domain::name")
- ``weights``: one entry per initializer (ONNX, dense and sparse) or MIL ``const`` (CoreML)
  holding at least 2 elements, a CoreML ``constexpr_*`` weight counted once, expanded:
  ``name``, ``shape`` ([int]), ``dtype``, ``elements``, ``zeros`` (exact zeros), ``sparsity``
  (zeros / elements), ``bytes`` (as stored: values plus indices for a sparse initializer or a
  CoreML sparse weight's mask), ``storage`` (``"dense"``, ``"sparse"``, ``"external"``, or
  ``"compressed"`` for other CoreML constexpr weights)
- ``layers``: the weights grouped by layer (the name up to its last ``.``): ``name``,
  ``elements``, ``zeros``, ``sparsity``, ``bytes``
- ``parameters``, ``zeros`` (ints, over ``weights``), ``sparsity`` (float)
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gatex.artifacts.mlprogram import constexpr_values, read_package
from gatex.artifacts.onnx_file import check_external_data
from gatex.artifacts.onnx_nodes import sparse_to_dense
from gatex.errors import BadInputError, GatexError

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")


@dataclass(frozen=True)
class WeightInfo:
    name: str
    shape: list[int]
    dtype: str
    elements: int
    zeros: int
    sparsity: float
    bytes: int
    storage: str


@dataclass(frozen=True)
class LayerInfo:
    name: str
    elements: int
    zeros: int
    sparsity: float
    bytes: int


@dataclass(frozen=True)
class ArtifactInfo:
    path: str
    format: str
    file_bytes: int
    ir_version: int | None
    opsets: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    custom_ops: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    functions: list[str] = field(default_factory=list)
    weights: list[WeightInfo] = field(default_factory=list)

    @property
    def layers(self) -> list[LayerInfo]:
        groups: dict[str, list[WeightInfo]] = collections.defaultdict(list)
        for w in self.weights:
            groups[w.name.rpartition(".")[0] or w.name].append(w)
        out = []
        for name, ws in groups.items():
            elements, zeros = sum(w.elements for w in ws), sum(w.zeros for w in ws)
            out.append(LayerInfo(name, elements, zeros, zeros / elements if elements else 0.0,
                                 sum(w.bytes for w in ws)))
        return out

    @property
    def parameters(self) -> int:
        return sum(w.elements for w in self.weights)

    @property
    def zeros(self) -> int:
        return sum(w.zeros for w in self.weights)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(x) for x in self.layers]
        data["parameters"] = self.parameters
        data["zeros"] = self.zeros
        data["sparsity"] = self.zeros / self.parameters if self.parameters else 0.0
        return data


def _weight(name: str, array: np.ndarray, stored_bytes: int, storage: str) -> WeightInfo:
    zeros = int(array.size - np.count_nonzero(array))
    return WeightInfo(name, [int(d) for d in array.shape], str(array.dtype), int(array.size),
                      zeros, zeros / array.size if array.size else 0.0, int(stored_bytes), storage)


def inspect_artifact(path: str | Path) -> ArtifactInfo:
    """Read ``path`` (.onnx or .mlpackage) and describe it; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path} does not exist")
    if path.suffix.lower() == ".onnx":
        return _inspect_onnx(path)
    if path.suffix.lower() in (".mlpackage", ".mlmodel"):
        return _inspect_coreml(path)
    raise BadInputError(f"{path}: gatex inspect reads .onnx files and .mlpackage packages")


def _inspect_onnx(path: Path) -> ArtifactInfo:
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import external_data_helper, numpy_helper

    if not path.is_file():
        raise BadInputError(f"{path} is not a file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise BadInputError(f"{path} is not a readable ONNX model ({type(exc).__name__})") \
            from None
    check_external_data(proto, path)  # every location inside the model's folder, in bounds
    if not proto.opset_import or not proto.HasField("graph"):
        raise BadInputError(f"{path} is not an ONNX model: it has no graph or no opset_import")
    external = [t for t in external_data_helper._get_all_tensors(proto)
                if external_data_helper.uses_external_data(t)]
    external_names = {t.name for t in external}
    locations = {external_data_helper.ExternalDataInfo(t).location for t in external}
    external_bytes = 0
    for loc in locations:
        data = path.parent / loc
        if not data.is_file():
            raise BadInputError(f"{path}: its external data file {loc} is missing")
        external_bytes += data.stat().st_size
    try:
        external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except Exception as exc:  # noqa: BLE001  (truncated or mismatched data files)
        raise BadInputError(f"{path}: its external data cannot be read ({exc})") from None
    weights = []
    try:
        for init in proto.graph.initializer:
            array = numpy_helper.to_array(init)
            if array.size >= 2:
                storage = "external" if init.name in external_names else "dense"
                weights.append(_weight(init.name, array, array.nbytes, storage))
        for sparse in proto.graph.sparse_initializer:
            array = sparse_to_dense(sparse)
            stored = numpy_helper.to_array(sparse.values).nbytes + \
                numpy_helper.to_array(sparse.indices).nbytes
            weights.append(_weight(sparse.values.name, array, stored, "sparse"))
    except (ValueError, IndexError, TypeError) as exc:
        raise BadInputError(f"{path}: a weight cannot be decoded ({exc})") from None
    nodes = proto.graph.node
    return ArtifactInfo(
        path=str(path), format="onnx", file_bytes=path.stat().st_size + external_bytes,
        ir_version=int(proto.ir_version),
        opsets={o.domain: int(o.version) for o in proto.opset_import},
        metadata={p.key: p.value for p in proto.metadata_props},
        custom_ops=dict(sorted(collections.Counter(
            f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS
        ).items())),
        ops=dict(sorted(collections.Counter(n.op_type for n in nodes).items())),
        functions=[f"{f.domain}::{f.name}" for f in proto.functions],
        weights=weights)


def _inspect_coreml(path: Path) -> ArtifactInfo:
    try:
        package = read_package(path)
        program = package.program() if package.is_ml_program else None
    except GatexError as exc:
        raise BadInputError(str(exc)) from None
    ops: collections.Counter[str] = collections.Counter()
    weights = []
    if program is not None:
        for function in program.functions.values():
            every = list(_operations(function))
            # consts that only feed a constexpr op (a sparse weight's mask and non-zeros) are
            # its storage, listed as that one weight
            parts = {v.name for op in every if op.op_type.startswith("constexpr_")
                     for v in op.inputs.values() if hasattr(v, "name")}
            for op in every:
                ops[op.op_type] += 1
                if op.op_type.startswith("constexpr_"):
                    weights += _constexpr_weights(path, op, parts)
                elif op.op_type == "const" and op.outputs and op.outputs[0].val is not None \
                        and op.outputs[0].name not in parts:
                    array = np.asarray(op.outputs[0].val)
                    if array.size >= 2 and array.dtype.kind in "fiu":
                        weights.append(_weight(op.name, array, array.nbytes, "dense"))
    size = path.stat().st_size if path.is_file() else \
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return ArtifactInfo(path=str(path), format="mlpackage", file_bytes=size,
                        ir_version=int(package.spec.specificationVersion),
                        metadata=dict(package.metadata), ops=dict(sorted(ops.items())),
                        weights=weights)


def _constexpr_weights(path: Path, op: Any, parts: set[str]) -> list[WeightInfo]:
    """The weights a ``constexpr_*`` op stores compressed (``constexpr_sparse_to_dense``: a bit
    mask and the non-zeros; others: palettes, quantisation): each output no other constexpr op
    reads, expanded (`constexpr_values`), with the bytes of the op's const inputs as stored."""
    try:
        values = constexpr_values(op)
    except Exception as exc:  # noqa: BLE001  (coremltools' own errors)
        raise BadInputError(f"{path}: {op.op_type} {op.name} cannot be expanded "
                            f"({type(exc).__name__}: {exc})") from None
    stored = sum(np.asarray(v.val).nbytes for v in op.inputs.values()
                 if getattr(v, "val", None) is not None)
    storage = "sparse" if op.op_type == "constexpr_sparse_to_dense" else "compressed"
    return [_weight(name, np.asarray(value), stored, storage)
            for name, value in values.items() if name not in parts]


def _operations(block: Any) -> Any:
    for op in block.operations:
        yield op
        for inner in getattr(op, "blocks", ()):
            yield from _operations(inner)
