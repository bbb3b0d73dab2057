"""The CoreML MIL emulator: a saved ``.mlpackage`` run in NumPy, where Core ML cannot run.

coremltools converts on Linux but ``MLModel.predict`` needs macOS. The emulator reads the
package's ML Program back through coremltools' milproto frontend and executes its main function
op by op in program order, rounding every op's output to fp16 where the program computes in fp16
(see `executor`). Kernels (`registry`): coremltools' own per-op ``value_inference`` where it is
sound, gatex's NumPy / torch-CPU kernels for the rest (conv, pooling, batch_norm, silu, ...).
An op it lacks is `UnsupportedOpError` (exit 2) naming the op, before anything runs.

    >>> emulator = MilEmulator("paGLU-fp16.mlpackage")          # doctest: +SKIP
    >>> emulator.run({"x": digits})["logits"]                    # doctest: +SKIP

Results are emulated, not Core ML's: its GPU and Neural Engine may order reductions differently
and use other transcendental approximations; parity results say "emulated".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gatex.runtimes.base import TensorSpec
from gatex.runtimes.coreml_emulator.executor import (
    CompiledProgram,
    EmulationError,
    UnsupportedOpError,
    supported_ops,
)
from gatex.artifacts.mlprogram import (
    CoremlPackage,
    import_coremltools,
    quiet_coremltools,
    read_package,
)

SUPPORTED_OPS: dict[str, str] = supported_ops()  # MIL op type -> value_inference/numpy/torch


class MilEmulator:
    """A saved ML Program (``.mlpackage``), compiled for the emulator.

    ``inputs`` / ``outputs`` are the model's declared features (`TensorSpec`); `run` takes and
    returns arrays by those names. Raises `CheckpointError` for a missing or corrupt package and
    `UnsupportedOpError` for an op the emulator lacks (both exit 2).
    """

    def __init__(self, package: str | Path | CoremlPackage) -> None:
        self.package = package if isinstance(package, CoremlPackage) else read_package(package)
        program = self.package.program()
        function = self.package.spec.description.defaultFunctionName or "main"
        self.program = CompiledProgram(program, function, where=str(self.package.path))
        self._output_vars = dict(zip((o.name for o in self.package.outputs),
                                     self.program.output_vars))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.package.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.package.outputs

    @property
    def metadata(self) -> dict[str, str]:
        return self.package.metadata

    @property
    def computes_fp16(self) -> bool:
        """True when some op of the program outputs fp16 (a ``compute_precision=FLOAT16`` model)."""
        return self.program.computes_fp16

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The model's outputs by feature name, for ``feeds`` by input name."""
        values = self.program.run(feeds)
        return {name: values[var] for name, var in self._output_vars.items()}

    def run_keeping_all(self, feeds: Mapping[str, Any]
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """`run`'s outputs, and every value of the run by MIL var name."""
        values = self.program.run(feeds, keep_all=True)
        return {name: values[var] for name, var in self._output_vars.items()}, values


def emulate(path: str | Path, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run the ``.mlpackage`` at ``path`` once on ``feeds`` in the emulator."""
    return MilEmulator(path).run(feeds)


__all__ = ["SUPPORTED_OPS", "CompiledProgram", "CoremlPackage", "EmulationError", "MilEmulator",
           "UnsupportedOpError", "emulate", "import_coremltools", "quiet_coremltools",
           "read_package"]
