"""torch tensors <-> NumPy arrays, bit-exact (bfloat16 through ml_dtypes where installed)."""

from __future__ import annotations

import numpy as np
import torch


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU copy as NumPy; bfloat16 becomes ml_dtypes' bfloat16 (bit-exact)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        try:
            import ml_dtypes
        except ImportError:  # bf16 values are exact in fp32; only the dtype name is lost
            return tensor.float().numpy()
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy().copy()


def from_numpy(array: np.ndarray) -> torch.Tensor:
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(array))
