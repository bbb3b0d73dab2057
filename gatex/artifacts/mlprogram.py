"""Reading a saved ``.mlpackage`` on any OS: its spec, metadata, declared I/O and MIL program.

coremltools reads a package without Core ML (``MLModel(path, skip_model_load=True)``), and its
milproto frontend turns the ML Program back into a MIL `Program`, op by op with types, with the
blob-file weights read from the package's ``weights`` directory. Every failure on the way is one
line (`CheckpointError`, exit 2): a missing path, a directory that is not a package, a corrupt
manifest or protobuf, a neural-network model where an ML Program was expected.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatex import _optional
from gatex.artifacts.mlpackage import check_blob_paths, check_package
from gatex.errors import CheckpointError
from gatex.artifacts.tensors import Dim, TensorSpec

# Core ML's MultiArray data types (FeatureTypes.proto) -> NumPy dtype names
ARRAY_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "DOUBLE": "float64",
                "INT32": "int32", "INT8": "int8"}


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[None]:
    """Silence coremltools' import-time warnings (untested torch version, no Core ML framework on
    Linux) and progress bars: they go to stderr and would bury gatex's one-line messages."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def import_coremltools() -> Any:
    """The ``coremltools`` module, imported quietly; absent: `BackendUnavailableError` (exit 3)."""
    with quiet_coremltools():
        return _optional.require("coremltools")


@dataclass(frozen=True)
class CoremlPackage:
    """A saved CoreML model as gatex reads it: where it is, what it declares, and its spec."""

    path: Path
    spec: Any                              # coremltools.proto.Model_pb2.Model
    weights_dir: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_ml_program(self) -> bool:
        return self.spec.WhichOneof("Type") == "mlProgram"

    def program(self) -> Any:
        """The ML Program as a MIL `Program` (coremltools' milproto frontend)."""
        if not self.is_ml_program:
            raise CheckpointError(
                f"{self.path} holds a {self.spec.WhichOneof('Type')} model; the emulator runs "
                "ML Programs only (convert with convert_to='mlprogram')")
        import_coremltools()
        from coremltools.converters.mil.frontend.milproto.load import load

        try:
            with quiet_coremltools():
                return load(self.spec, self.spec.specificationVersion, self.weights_dir)
        except Exception as exc:  # noqa: BLE001  (protobuf, blob reader, type inference errors)
            raise CheckpointError(f"{self.path}: its ML Program cannot be read "
                                  f"({_one_line(exc)})") from None


def read_package(path: str | Path) -> CoremlPackage:
    """Read ``path`` (an ``.mlpackage`` directory, or an ``.mlmodel`` file) without running it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"CoreML model {path} does not exist")
    if path.suffix.lower() == ".mlpackage":
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a directory: an .mlpackage is a folder holding "
                                  "Manifest.json and Data/")
        check_package(path)  # nothing outside the package is read
    ct = import_coremltools()
    try:
        with quiet_coremltools():
            model = ct.models.MLModel(str(path), skip_model_load=True)
            spec = model.get_spec()
            weights_dir = model.weights_dir if spec.WhichOneof("Type") == "mlProgram" else ""
    except Exception as exc:  # noqa: BLE001  (RuntimeError, DecodeError, JSON errors, OSError)
        raise CheckpointError(f"{path} is not a readable CoreML model ({_one_line(exc)})") from None
    if path.suffix.lower() == ".mlpackage":
        check_blob_paths(path, spec, weights_dir)
    description = spec.description
    metadata = dict(description.metadata.userDefined)
    return CoremlPackage(path=path, spec=spec, weights_dir=str(weights_dir or ""),
                         inputs=tuple(_feature(f, path) for f in description.input),
                         outputs=tuple(_feature(f, path) for f in description.output),
                         metadata=metadata)


def _feature(feature: Any, path: Path) -> TensorSpec:
    kind = feature.type.WhichOneof("Type")
    if kind != "multiArrayType":
        raise CheckpointError(f"{path}: feature {feature.name!r} is a {kind}; gatex runs models "
                              "whose inputs and outputs are multi-arrays (tensors)")
    array = feature.type.multiArrayType
    type_name = type(array).ArrayDataType.Name(array.dataType)
    dtype = ARRAY_DTYPES.get(type_name, type_name.lower())
    return TensorSpec(feature.name, dtype, _shape(array))


def _shape(array: Any) -> tuple[Dim, ...] | None:
    shape = tuple(int(d) for d in array.shape)
    flexibility = array.WhichOneof("ShapeFlexibility")
    if flexibility == "shapeRange":
        ranges = array.shapeRange.sizeRanges
        return tuple(int(r.lowerBound) if r.lowerBound == r.upperBound else None
                     for r in ranges)
    if flexibility == "enumeratedShapes":
        shapes = [tuple(s.shape) for s in array.enumeratedShapes.shapes]
        if not shapes:
            return shape or None
        return tuple(d[0] if len(set(d)) == 1 else None for d in zip(*shapes))
    return shape or None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def constexpr_values(op: Any) -> dict[str, Any]:
    """A ``constexpr_*`` op's outputs (a sparse, palettized or quantized weight expanded) by
    output name, through coremltools' own ``materialized_val_inference``."""
    values = op.materialized_val_inference()
    values = values if isinstance(values, tuple) else (values,)
    return {v.name: x for v, x in zip(op.outputs, values)}
