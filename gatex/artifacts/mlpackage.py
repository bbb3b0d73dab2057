"""An ``.mlpackage`` may only reference files inside itself.

A package is a folder whose ``Manifest.json`` names the model spec and the weights folder by
relative path, and whose ML Program names its weight blobs (``@model_path/weights/...``). A
hostile package can point any of them outside (``../../elsewhere``, an absolute path, a symbolic
link), and coremltools would read there. `check_package` refuses that before coremltools opens
the package: every manifest entry, every symbolic link in the tree and (`check_blob_paths`)
every blob file the program names must resolve inside the package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gatex import _io
from gatex.errors import CheckpointError

MANIFEST_LIMIT = 16 << 20  # a manifest is a few hundred bytes; refuse absurd ones unread


def check_package(path: str | Path) -> None:
    """CheckpointError unless every path the package's manifest holds, and every symbolic link
    in it, stays inside ``path``."""
    path = Path(path)
    manifest = path / "Manifest.json"
    if manifest.is_symlink():
        raise CheckpointError(f"{path}: Manifest.json is a symbolic link; refusing to follow it")
    if not manifest.is_file():
        raise CheckpointError(f"{path} is not a CoreML package: it has no Manifest.json")
    if manifest.stat().st_size > MANIFEST_LIMIT:
        raise CheckpointError(f"{path}: Manifest.json is {manifest.stat().st_size} bytes, not a "
                              "CoreML manifest")
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8")).get("itemInfoEntries", {})
    except (ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable CoreML model (Manifest.json is not "
                              f"valid JSON: {exc})") from None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{path}: Manifest.json has no itemInfoEntries table")
    data = path / "Data"
    for key, entry in entries.items():
        item = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(item, str):
            raise CheckpointError(f"{path}: Manifest.json entry {key} has no path")
        _io.contained(data, item, f"{path}: Manifest.json entry {entry.get('name', key)!r}")
    root = path.resolve()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            link = Path(dirpath) / name
            if link.is_symlink():
                target = link.resolve()
                if target != root and root not in target.parents:
                    raise CheckpointError(f"{path}: {link.relative_to(path)} is a symbolic link "
                                          f"to {os.readlink(link)}, outside the package; "
                                          "refusing to read it")


def check_blob_paths(path: str | Path, spec: Any, weights_dir: str | Path) -> None:
    """CheckpointError unless every weight blob the ML Program in ``spec`` names lies inside
    ``weights_dir`` (which `check_package` already placed inside the package)."""
    if spec.WhichOneof("Type") != "mlProgram":
        return
    for name in _blob_file_names(spec.mlProgram):
        relative = name.removeprefix("@model_path/weights/").removeprefix("@model_path/")
        base = weights_dir if name.startswith("@model_path/weights/") else Path(weights_dir).parent
        _io.contained(base, relative, f"{path}: a weight blob of the program")


def _blob_file_names(message: Any) -> list[str]:
    """Every ``BlobFileValue.fileName`` anywhere below ``message`` (a protobuf walk)."""
    found: list[str] = []
    stack = [message]
    while stack:
        msg = stack.pop()
        if type(msg).__name__ == "BlobFileValue":
            found.append(msg.fileName)
            continue
        for field, value in msg.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            if hasattr(value, "ListFields"):           # a single message
                stack.append(value)
            elif hasattr(value, "items"):              # a map: its message values
                stack.extend(v for v in value.values() if hasattr(v, "ListFields"))
            else:                                      # a repeated message field
                stack.extend(value)
    return found


__all__ = ["check_blob_paths", "check_package"]
