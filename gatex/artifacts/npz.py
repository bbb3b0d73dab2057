"""Reading an ``.npz`` of input arrays that may be hostile: no pickles, sizes checked first.

``np.load`` inflates a compressed member in full before anyone sees its shape, so a 1 MB file
can ask for gigabytes. Here each member's ``.npy`` header is read first (shape and dtype, from a
few hundred bytes), and the array it declares, as well as the member's uncompressed size, must
fit `gatex._io.max_bytes`; object arrays are refused (they would need pickles).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gatex import _io
from gatex.errors import BadInputError


def read_npz(path: str | Path, what: str = "inputs file") -> dict[str, np.ndarray]:
    """Arrays by name from ``path``; a bad, hostile or oversized file is one `BadInputError`."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{what} {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_member(path, archive, info)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001  (zipfile/pickle/ValueError on a bad file)
        raise BadInputError(f"{path} is not a readable .npz of arrays ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]})") from None


def _check_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    name = info.filename.removesuffix(".npy")
    _io.check_size(info.file_size, f"{path}: array {name!r} (uncompressed)")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise BadInputError(f"{path} is not a readable .npz of arrays: {name!r} holds Python "
                            "objects (they need pickles to load); give numeric arrays")
    _io.check_size(math.prod(shape) * dtype.itemsize, f"{path}: array {name!r} "
                   f"({'x'.join(map(str, shape))} {dtype})")


__all__ = ["read_npz"]


def load_calibration(path, sample_shape: tuple[int, ...]) -> Any:
    """Calibration inputs from an ``.npz`` file: its array ``x``, or its only array.

    The samples must have ``sample_shape`` (the model input without the batch dimension); a
    flat (N, prod(sample_shape)) array is reshaped. Bad files are a one-line `BadInputError`.
    Returns a float32 torch tensor.
    """
    import torch

    if not Path(path).is_file():
        raise BadInputError(f"--calibration {path}: no such file")
    try:
        data = read_npz(path, "--calibration file")
    except BadInputError as exc:
        raise BadInputError(f"--calibration {path}: {exc}") from None
    keys = list(data)
    if "x" in keys:
        x = data["x"]
    elif len(keys) == 1:
        x = data[keys[0]]
    else:
        raise BadInputError(f"--calibration {path}: no array named 'x' among "
                            f"{', '.join(keys) or 'no arrays'}")
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu" or x.ndim < 1 or not len(x):
        raise BadInputError(f"--calibration {path}: 'x' must be a non-empty numeric array")
    n_sample = int(np.prod(sample_shape)) if sample_shape else 1
    if tuple(x.shape[1:]) != tuple(sample_shape):
        if x.ndim == 2 and x.shape[1] == n_sample:
            x = x.reshape(len(x), *sample_shape)
        else:
            raise BadInputError(f"--calibration {path}: samples of shape {tuple(x.shape[1:])} "
                                f"do not fit the model input {tuple(sample_shape)}")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not bool(torch.isfinite(t).all()):
        raise BadInputError(f"--calibration {path}: the data holds NaN or infinity")
    return t
