"""`CoremlRuntime`: a saved CoreML ``.mlpackage``, run by Core ML on macOS, emulated elsewhere.

On macOS, where coremltools ships its native module, ``MLModel.predict`` runs the model on the
compute units asked for (all, cpu, cpu_gpu, cpu_ne). Everywhere else (Linux CI) the model runs
in gatex's MIL emulator (`gatex.runtimes.coreml_emulator`): its results are labelled emulated
(``runtime.emulated``, and "coreml (emulated)" in every table, JSON and JUnit verdict), since
they are NumPy's answers to Core ML's program, not Core ML's own.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from gatex.environment import installed_version
from gatex.errors import BackendUnavailableError, BadInputError, CheckFailedError, UnknownOpError
from gatex.ops import REGISTRY
from gatex.runtimes.base import Runtime, TensorSpec

# gatex's names -> coremltools.ComputeUnit members (the exporter's --compute-units spelling)
COMPUTE_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "cpu_gpu": "CPU_AND_GPU", "cpu_ne": "CPU_AND_NE"}
OPS_METADATA_KEY = "gatex.ops"   # the exporter's comma-separated op ids (gatex::GoLU,...)
# MIL ops with a reduction inside: their accumulation order is the backend's (parity.tolerance_for)
MIL_REDUCTIONS = frozenset({"linear", "matmul", "einsum", "conv", "conv_transpose",
                            "scaled_dot_product_attention"})


def coreml_can_predict() -> tuple[bool, str]:
    """(whether ``MLModel.predict`` works here, why not when it does not)."""
    system = platform.system()
    if system != "Darwin":
        return False, f"Core ML runs models only on macOS (this is {system})"
    if not installed_version("coremltools")[0]:
        return False, "coremltools is not installed: pip install 'gatex[coreml]'"
    from importlib.util import find_spec

    try:
        native = find_spec("coremltools.libcoremlpython") is not None
    except Exception:  # noqa: BLE001  (find_spec imports coremltools, which may be broken)
        native = False
    if not native:
        return False, "this coremltools lacks its native predict module (libcoremlpython)"
    return True, ""


def parse_compute_units(spec: str) -> tuple[str, ...]:
    """``"all"`` or ``"cpu,cpu_ne"`` -> ("cpu", "cpu_ne"); an unknown name is one line."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in str(spec).split(",") if n.strip()))
    unknown = [n for n in names if n not in COMPUTE_UNITS]
    if unknown or not names:
        raise BadInputError(f"unknown compute units {', '.join(unknown) or repr(spec)}; use "
                            f"{', '.join(COMPUTE_UNITS)} (comma-separated for several)")
    return names


class CoremlRuntime(Runtime):
    """A ``.mlpackage`` on Core ML (macOS) or in the MIL emulator (elsewhere).

    ``compute_units``: all, cpu, cpu_gpu or cpu_ne (Core ML only; the emulator has one way to
    run). ``emulate``: None (default) emulates exactly where Core ML cannot predict; True always
    emulates (also on macOS, to compare the emulator with Core ML); False insists on Core ML and
    raises `BackendUnavailableError` (exit 3) where it cannot run.
    """

    name = "coreml"

    def __init__(self, model: str | Path, *, compute_units: str = "all",
                 emulate: bool | None = None) -> None:
        super().__init__()
        if compute_units not in COMPUTE_UNITS:
            raise BadInputError(f"unknown compute units {compute_units!r}; use one of "
                                f"{', '.join(COMPUTE_UNITS)}")
        self.model = Path(model)
        self.compute_units = compute_units
        self.emulate = emulate
        self.emulated = bool(emulate)  # decided for good in _load
        self.package: Any = None
        self._engine: Any = None       # MLModel (Core ML) or MilEmulator
        self._op_types: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.emulated:
            return "coreml (emulated)"
        return f"coreml ({COMPUTE_UNITS[self.compute_units]})"

    def _load(self) -> None:
        from gatex.runtimes.coreml_emulator import read_package

        package = read_package(self.model)  # a bad package is one line, whatever the backend
        can_predict, why_not = coreml_can_predict()
        if self.emulate is False and not can_predict:
            raise BackendUnavailableError(
                f"CoreML prediction is not available here: {why_not}; gatex runs .mlpackage "
                "models in its MIL emulator instead (gatex parity does so by itself)")
        if can_predict and not self.emulate:
            self._engine = self._load_core_ml()
            self.emulated = False
            program = package.program() if package.is_ml_program else None
            self._op_types = _op_types(program) if program is not None else ()
        else:
            from gatex.runtimes.coreml_emulator import MilEmulator

            self._engine = MilEmulator(package)
            self.emulated = True
            self._op_types = tuple(sorted(self._engine.program.op_types))
        self.package = package

    def _load_core_ml(self) -> Any:
        from gatex.runtimes.coreml_emulator import import_coremltools, quiet_coremltools

        ct = import_coremltools()
        units = getattr(ct.ComputeUnit, COMPUTE_UNITS[self.compute_units])
        try:
            with quiet_coremltools():
                return ct.models.MLModel(str(self.model), compute_units=units)
        except Exception as exc:  # noqa: BLE001  (Core ML's compile errors come as RuntimeError)
            raise CheckFailedError(f"Core ML cannot load {self.model} on "
                                   f"{self.compute_units}: {_one_line(exc)}") from None

    def _close(self) -> None:
        self._engine = None
        self.package = None

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return self.package.inputs

    def _output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.package.outputs)

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        self._require_loaded("output_specs")
        return self.package.outputs

    @property
    def metadata(self) -> dict[str, str]:
        """The package's user-defined metadata (the exporter records ``gatex.unit`` there)."""
        self._require_loaded("metadata")
        return dict(self.package.metadata)

    @property
    def emulator(self) -> Any:
        """The `MilEmulator` running the program (None on Core ML)."""
        self._require_loaded("emulator")
        return self._engine if self.emulated else None

    @property
    def mil_op_types(self) -> tuple[str, ...]:
        """The MIL op types of the program (empty for a neural-network .mlmodel)."""
        self._require_loaded("mil_op_types")
        return self._op_types

    @property
    def compute_dtype(self) -> str:
        """``float16`` when the program computes in fp16 (whatever its I/O dtypes), else
        ``float32``: the dtype whose tolerances parity applies."""
        self._require_loaded("compute_dtype")
        precision = self.package.metadata.get("gatex.precision")
        if precision in ("fp16", "fp32"):
            return "float16" if precision == "fp16" else "float32"
        if self.emulated:
            return "float16" if self._engine.computes_fp16 else "float32"
        return "float16" if any(o.dtype == "float16" for o in self.package.outputs) else "float32"

    @property
    def gatex_ops(self) -> tuple[str, ...]:
        """Spec names of the gatex ops the exporter recorded (``gatex.ops`` metadata)."""

        self._require_loaded("gatex_ops")
        names = []
        for op_id in self.package.metadata.get(OPS_METADATA_KEY, "").split(","):
            try:
                names.append(REGISTRY.get(op_id.strip()).name)
            except UnknownOpError:  # empty, or an op of another gatex version: no spec here
                continue
        return tuple(names)

    @property
    def reductions(self) -> tuple[str, ...]:
        """The MIL ops with a reduction inside that the program holds."""
        return tuple(o for o in self.mil_op_types if o in MIL_REDUCTIONS)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.emulated:
            return self._engine.run(feeds)
        try:
            raw = self._engine.predict(feeds)
        except Exception as exc:  # noqa: BLE001  (Core ML errors on valid feeds: the artifact)
            raise CheckFailedError(f"{self.label} failed running {self.model}: "
                                   f"{_one_line(exc)}") from None
        # Core ML may hand fp16 outputs back as fp32 arrays: the declared dtype is exact for them
        return {o.name: np.asarray(raw[o.name]).astype(o.dtype, copy=False)
                for o in self.package.outputs}


def _op_types(program: Any) -> tuple[str, ...]:
    found: set[str] = set()

    def walk(block: Any) -> None:
        for op in block.operations:
            found.add(op.op_type)
            for inner in op.blocks:
                walk(inner)

    for function in program.functions.values():
        walk(function)
    return tuple(sorted(found))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__
