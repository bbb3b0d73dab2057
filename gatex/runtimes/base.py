"""`Runtime`: one way to run a model (torch eager, onnxruntime, ...), as a template (Polygraphy).

The public methods validate and the subclasses do the work: `run` checks every feed against the
model's declared inputs (names, dtypes, static dimensions) and counts NaNs, then calls `_run`.
A runtime is a context manager (``with OrtRuntime(path) as rt: rt.run(feeds)``), or is loaded and
closed explicitly (`load` / `close`); using one that is not loaded raises `RuntimeNotLoadedError`
rather than building a session behind the caller's back (a closed runtime stays closed).
Subclasses import their backend inside `_load`, so importing this package never imports an
optional backend; a missing one raises `BackendUnavailableError` (exit 3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from gatex.artifacts.tensors import TensorSpec, shape_text as _shape_text
from gatex.errors import BadInputError

def describe_array(array: np.ndarray) -> str:
    """``float64[2,64]``: an actual value, in the same notation as `TensorSpec.describe`."""
    return f"{array.dtype.name}{_shape_text(tuple(array.shape))}"


def nan_count(array: np.ndarray) -> int:
    """NaNs in ``array`` (0 for integer and boolean arrays)."""
    if array.dtype.kind not in "fc" and array.dtype.name != "bfloat16":
        return 0
    return int(np.count_nonzero(np.isnan(array.astype(np.float64, copy=False))))


class RuntimeNotLoadedError(RuntimeError):
    """A runtime was used before `Runtime.load` (or after `Runtime.close`): a caller's bug."""


class Runtime(ABC):
    """Runs one model. Subclasses set `name`, implement `_load`/`_run` and describe their I/O.

    After each `run`, ``last_input_nans`` maps every input that held NaNs to how many: NaN inputs
    are legal (a model may be meant to propagate them), so they are reported, never refused.
    """

    name: ClassVar[str] = "runtime"
    emulated: ClassVar[bool] = False  # True for results computed by an emulator (CoreML on Linux)

    def __init__(self) -> None:
        self._loaded = False
        self.last_input_nans: dict[str, int] = {}

    # -- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def _load(self) -> None:
        """Build the session / move the model; import the backend here."""

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds; return outputs by name, in the model's output order."""

    def _close(self) -> None:
        """Release the session; the default keeps nothing to release."""

    @abstractmethod
    def _input_specs(self) -> tuple[TensorSpec, ...] | None:
        """The declared inputs, or None when the model declares none (torch eager)."""

    @abstractmethod
    def _output_names(self) -> tuple[str, ...]:
        """Output names in order."""

    @property
    def label(self) -> str:
        """How tables show this runtime, e.g. ``onnxruntime (CPU)``."""
        return self.name

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader of this runtime's results must know (every parity report lists it),
        e.g. that a stand-in ran in place of the real backend; none by default."""
        return ()

    # -- the template ---------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True between `load` and `close`."""
        return self._loaded

    def _require_loaded(self, what: str) -> None:
        if not self._loaded:
            raise RuntimeNotLoadedError(
                f"{type(self).__name__}.{what} needs a loaded runtime: use `with runtime:` or "
                "call runtime.load() first")

    def load(self) -> Runtime:
        """Load once (later calls do nothing); returns self."""
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def close(self) -> None:
        """Release what `load` built; `load` may be called again afterwards."""
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> Runtime:
        return self.load()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def input_specs(self) -> tuple[TensorSpec, ...] | None:
        self._require_loaded("input_specs")
        return self._input_specs()

    @property
    def output_names(self) -> tuple[str, ...]:
        self._require_loaded("output_names")
        return self._output_names()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` (name -> array), then run; returns outputs by name as NumPy arrays."""
        self._require_loaded("run")
        arrays = self.validate_feeds(feeds)
        self.last_input_nans = {k: n for k, a in arrays.items() if (n := nan_count(a))}
        return self._run(arrays)

    def validate_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Feeds as arrays, in declared input order; a wrong name, dtype or shape is one line.

        A dimension the model fixes must match exactly; a dynamic one takes any size. Values are
        never cast: a float64 array for a float32 input is an error, not a silent conversion.
        """
        if not isinstance(feeds, Mapping):
            raise BadInputError(f"{self.label}: feeds must map input names to arrays; got "
                                f"{type(feeds).__name__}")
        arrays = {str(k): _as_array(k, v, self.label) for k, v in feeds.items()}
        specs = self.input_specs
        if specs is None:
            return arrays
        declared = ", ".join(f"{s.name!r} ({s.describe()})" for s in specs)  # 'x' (float32[N,64])
        known = {s.name for s in specs}
        for name in arrays:
            if name not in known:
                raise BadInputError(f"{self.label}: unknown input {name!r}; the model takes "
                                    f"{declared}")
        ordered: dict[str, np.ndarray] = {}
        for spec in specs:
            if spec.name not in arrays:
                raise BadInputError(f"{self.label}: missing input {spec.name!r} "
                                    f"({spec.describe()}); the model takes {declared}")
            array = arrays[spec.name]
            if array.dtype.name != spec.dtype or not spec.accepts_shape(tuple(array.shape)):
                raise BadInputError(f"{self.label}: input {spec.name!r} expects "
                                    f"{spec.describe()}, got {describe_array(array)}")
            ordered[spec.name] = array
        return ordered


def _as_array(name: object, value: Any, label: str) -> np.ndarray:
    if type(value).__module__.startswith("torch"):  # a tensor; torch is loaded if we got one
        from gatex.runtimes.arrays import to_numpy  # torch is loaded: the value is a tensor

        value = to_numpy(value)
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001  (anything NumPy cannot read is a bad feed)
        raise BadInputError(f"{label}: input {name!r} is not an array ({type(exc).__name__}: "
                            f"{exc})") from None
    if array.dtype.kind not in "biufc" and array.dtype.name != "bfloat16":
        raise BadInputError(f"{label}: input {name!r} must be a numeric array; got dtype "
                            f"{array.dtype}")
    return array
