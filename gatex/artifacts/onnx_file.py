"""Reading an ONNX file whose external data may point anywhere.

A tensor stored as external data names its file by ``location``, relative to the model's
folder. A hostile model can name ``../../home/user/.ssh/id_rsa``, an absolute path, or a
symbolic link beside the model that leads out of its folder, and onnx or onnxruntime would read
it. `check_external_data` refuses every such location, and every offset/length that runs past
the end of its file, before anything opens the data; `read_onnx` is the one way gatex loads an
ONNX proto, and the onnxruntime session, the bench and inspect call the check before they hand
the path to a library.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

from gatex import _io
from gatex.errors import CheckpointError


_CHECKED: set[tuple[str, int, int]] = set()   # (resolved path, mtime_ns, size) already checked


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def read_onnx(path: str | Path, *, external_data: bool = True) -> Any:
    """The ``onnx.ModelProto`` in ``path``; its external data loaded (when asked) only after
    every location was checked to lie inside the model's folder."""
    import onnx
    from onnx import external_data_helper

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model {path} does not exist")
    _io.check_size(path.stat().st_size, f"ONNX model {path}", "model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001  (DecodeError, OSError, ...)
        raise CheckpointError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]})") from None
    check_external_data(proto, path)
    _CHECKED.add(_key(path))
    if external_data:
        external_data_helper.load_external_data_for_model(proto, str(path.parent))
    return proto


def check_file(path: str | Path) -> None:
    """`check_external_data` for the model at ``path`` before a library opens it; a file that
    does not parse is left to that library, which names what is wrong with it. A file this
    process already checked, unchanged since (same mtime and size), is not parsed again."""
    import onnx

    path = Path(path)
    if _key(path) in _CHECKED:  # read_onnx checked this very file in this process already
        return
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001,S110  (the library's own load reports it)
        return
    check_external_data(proto, path)
    _CHECKED.add(_key(path))


def check_external_data(proto: Any, path: Path) -> None:
    """CheckpointError unless every external tensor of ``proto`` (the model at ``path``) reads a
    file inside ``path``'s folder, within that file's length; declared sizes are limited."""
    from onnx import TensorProto

    total = 0
    sizes: dict[Path, int] = {}
    for tensor in _all_tensors(proto):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        what = f"{path}: external data of tensor {tensor.name!r}"
        target = _io.contained(path.parent, info.get("location", ""), what)
        if target not in sizes:
            if not target.is_file():
                raise CheckpointError(f"{path}: its external data file {info.get('location')} "
                                      f"is missing (tensor {tensor.name!r})")
            sizes[target] = target.stat().st_size
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else sizes[target] - offset
        except ValueError:
            raise CheckpointError(f"{what}: offset/length are not integers") from None
        if offset < 0 or length < 0 or offset + length > sizes[target]:
            raise CheckpointError(f"{what}: bytes {offset}..{offset + length} run past the end "
                                  f"of {info.get('location')!r} ({sizes[target]} bytes)")
        total += length
    _io.check_size(total, f"{path} (its external data)", "model")


def _all_tensors(proto: Any) -> Iterator[Any]:
    from onnx import external_data_helper

    sparse = chain.from_iterable((s.values, s.indices) for s in proto.graph.sparse_initializer)
    return chain(external_data_helper._get_all_tensors(proto), sparse)


__all__ = ["check_external_data", "check_file", "read_onnx"]
