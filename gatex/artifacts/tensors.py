"""`TensorSpec`: a model input or output as an artifact declares it (name, dtype, shape)."""

from __future__ import annotations

from dataclasses import dataclass

Dim = int | str | None  # a static size, a symbolic name ("N"), or unknown


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the model declares it: name, element type, shape.

    ``dtype`` is a NumPy dtype name ("float32", "float16", "bfloat16", "int64", ...). ``shape`` is
    None when even the rank is unknown; a dimension that is a string or None is dynamic.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None = None

    def describe(self) -> str:
        """``float32[N,64]``: how messages show it."""
        return f"{self.dtype}{shape_text(self.shape)}"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d == s for d, s in zip(self.shape, shape))

    @property
    def static_batch(self) -> int | None:
        """The first dimension when it is fixed (an export with ``--static``), else None."""
        if self.shape and isinstance(self.shape[0], int):
            return self.shape[0]
        return None


def shape_text(shape: tuple[Dim, ...] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
