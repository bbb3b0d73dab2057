"""The matrix file: which models go to which targets in which precisions, read from TOML.

    [matrix]
    runners = ["linux", "macos"]        # the runner kinds the CI has (default: linux)

    [[matrix.models]]
    zoo = "*"                           # every zoo unit (or a list of unit names)

    [[matrix.models]]
    name = "mlp"                        # a model of the team's own
    model = "nets.py:build"             # module:attr or file.py:attr (an nn.Module or factory)
    weights = "mlp.safetensors"         # optional
    input_shape = "1,64"                # example input (or inputs = "x.npz")

    [[matrix.targets]]
    to = "onnx"                         # onnx | openvino | coreml | trt
    flavor = "portable"                 # onnx: portable | plugin | inline
    dtypes = ["fp32", "fp16"]           # onnx dtypes; coreml / trt: precisions
    [[matrix.targets]]
    to = "coreml"
    precisions = ["fp16"]
    compute_units = "all"
    [[matrix.targets]]
    to = "trt"
    precisions = ["fp32"]
    plugins = "auto"

A cell is one model x one target x one dtype, named ``model/target/dtype``. Each entry may
carry ``options`` (a table passed to `gatex.export`, e.g. ``{ opset = 20 }``). Every mistake is
one line naming the entry (`MatrixError`, exit 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from gatex.errors import BadInputError
from gatex.models import zoo

RUNNERS = ("linux", "macos", "gpu")
TARGET_KINDS = {"onnx": ("fp32", "fp16"), "openvino": ("fp32", "fp16"),
                "coreml": ("fp32", "fp16"), "trt": ("fp32", "fp16", "bf16")}
FLAVORS = ("portable", "plugin", "inline")
EXPORT_OPTIONS = frozenset({"opset", "dynamic_batch", "deployment_target", "pg_scale",
                            "compact", "sparse_weights", "precision_floor"})
# seconds a cell takes, by target kind, when no baseline measured it (2-core CI machine)
DEFAULT_COST = {"onnx": 6.0, "openvino": 7.0, "coreml": 9.0, "trt": 7.0}


class MatrixError(BadInputError):
    """A matrix file, a shard or a run directory that cannot be used (exit 2)."""


@dataclass(frozen=True)
class Model:
    name: str
    unit: str | None = None          # a zoo unit
    ref: str | None = None           # module:attr / file.py:attr
    weights: str | None = None
    inputs: str | None = None        # .npz of example (and check) inputs
    input_shape: tuple[int, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    name: str
    to: str
    dtypes: tuple[str, ...]
    flavor: str = "portable"
    compute_units: str = "all"
    plugins: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    model: Model
    target: Target
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.model.name}/{self.target.name}/{self.dtype}"

    def runner(self, runners: Sequence[str]) -> str:
        """The runner kind that executes this cell: CoreML predicts on macOS (emulated on
        linux when the CI has no macOS runner), TensorRT builds on a GPU runner (its bundle
        graph is checked on linux without one), ONNX (onnxruntime, OpenVINO CPU): linux."""
        if self.target.to == "coreml" and "macos" in runners:
            return "macos"
        if self.target.to == "trt" and "gpu" in runners:
            return "gpu"
        return "linux"

    def exported_on(self, runners: Sequence[str]) -> str | None:
        """Where the artifact is made when that is not where it is checked: a CoreML package
        for the macOS runner is converted on linux (coremltools converts anywhere; Core ML
        predicts only on macOS), and the macOS job checks it with ``--from``. None otherwise."""
        return "linux" if self.runner(runners) == "macos" else None


@dataclass(frozen=True)
class Matrix:
    path: Path
    runners: tuple[str, ...]
    models: tuple[Model, ...]
    targets: tuple[Target, ...]

    def cells(self) -> list[Cell]:
        """Every cell, models x targets x dtypes, in file order."""
        return [Cell(m, t, d) for m in self.models for t in self.targets for d in t.dtypes]


def _error(path: Path, where: str, message: str) -> MatrixError:
    return MatrixError(f"{path}: {where}: {message}")


def _strings(value: Any, path: Path, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _error(path, where, f"{key} must be a string or a non-empty list of strings")
    return tuple(value)


def _check_keys(entry: dict, allowed: set[str], path: Path, where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise _error(path, where, f"unknown key {unknown[0]!r} (allowed: "
                                  f"{', '.join(sorted(allowed))})")


def _options(entry: dict, path: Path, where: str) -> dict[str, Any]:
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise _error(path, where, "options must be a table")
    unknown = sorted(set(options) - EXPORT_OPTIONS)
    if unknown:
        raise _error(path, where, f"unknown option {unknown[0]!r} (allowed: "
                                  f"{', '.join(sorted(EXPORT_OPTIONS))})")
    return dict(options)


def _unique(names: list[str], path: Path, what: str) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _error(path, f"{what}s", f"{what} {twice[0]!r} appears twice; give each a name")


def _tables(entries: Any, path: Path, what: str) -> list[tuple[str, dict]]:
    """(where, entry) for each [[matrix.<what>]] table; at least one."""
    if not isinstance(entries, list) or not entries:
        raise _error(path, "[matrix]", f"needs at least one [[matrix.{what}]] entry")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _error(path, f"{what}[{i}]", "must be a table")
    return [(f"{what}[{i}]", entry) for i, entry in enumerate(entries)]


def _models(entries: Any, path: Path) -> list[Model]:
    models: list[Model] = []
    for where, entry in _tables(entries, path, "models"):
        _check_keys(entry, {"zoo", "name", "model", "weights", "inputs", "input_shape",
                            "options"}, path, where)
        if ("zoo" in entry) == ("model" in entry):
            raise _error(path, where, "give exactly one of zoo = NAME(S) and model = REF")
        options = _options(entry, path, where)
        if "zoo" in entry:
            names = list(zoo.ZOO) if entry["zoo"] == "*" else \
                _strings(entry["zoo"], path, where, "zoo")
            for name in names:
                try:
                    unit = zoo.entry(name).unit
                except BadInputError as exc:
                    raise _error(path, where, str(exc)) from None
                models.append(Model(entry.get("name", unit) if len(names) == 1 else unit,
                                    unit=unit, options=options))
            continue
        name, ref = entry.get("name"), entry["model"]
        if not isinstance(name, str) or not name or "/" in name:
            raise _error(path, where, "a model = REF entry needs a name without '/'")
        if not isinstance(ref, str) or ":" not in ref:
            raise _error(path, where, f"model must be module:attr or file.py:attr; got {ref!r}")
        shape = entry.get("input_shape")
        if shape is not None:
            try:
                shape = tuple(int(s) for s in str(shape).split(","))
            except ValueError:
                raise _error(path, where, f"input_shape must be like 1,64; got {shape!r}") \
                    from None
        if shape is None and "inputs" not in entry:
            raise _error(path, where, "give input_shape = \"1,64\" or inputs = \"x.npz\"")
        base = path.parent
        models.append(Model(name, ref=ref, options=options, input_shape=shape,
                            weights=str(base / entry["weights"]) if "weights" in entry else None,
                            inputs=str(base / entry["inputs"]) if "inputs" in entry else None))
    _unique([m.name for m in models], path, "model")
    return models


def _targets(entries: Any, path: Path) -> list[Target]:
    targets: list[Target] = []
    for where, entry in _tables(entries, path, "targets"):
        _check_keys(entry, {"to", "name", "flavor", "dtypes", "precisions", "compute_units",
                            "plugins", "options"}, path, where)
        to = entry.get("to")
        if to not in TARGET_KINDS:
            raise _error(path, where, f"to must be one of {', '.join(TARGET_KINDS)}; got {to!r}")
        onnx_like = to in ("onnx", "openvino")
        key = "dtypes" if onnx_like else "precisions"
        other = "precisions" if onnx_like else "dtypes"
        if other in entry:
            raise _error(path, where, f"{to} targets take {key}, not {other}")
        dtypes = _strings(entry.get(key, ["fp32"]), path, where, key)
        bad = [d for d in dtypes if d not in TARGET_KINDS[to]]
        if bad:
            raise _error(path, where, f"{to} {key} are {', '.join(TARGET_KINDS[to])}; "
                                      f"got {bad[0]!r}")
        flavor = entry.get("flavor", "portable")
        if flavor not in FLAVORS or (not onnx_like and "flavor" in entry):
            raise _error(path, where, f"flavor is for onnx targets: {', '.join(FLAVORS)}")
        name = entry.get("name") or (f"onnx-{flavor}" if to == "onnx" else to)
        if not isinstance(name, str) or "/" in name:
            raise _error(path, where, "name must be a string without '/'")
        targets.append(Target(name, to, dtypes, flavor=flavor,
                              compute_units=str(entry.get("compute_units", "all")),
                              plugins=str(entry.get("plugins", "auto")),
                              options=_options(entry, path, where)))
    _unique([t.name for t in targets], path, "target")
    return targets


def load_matrix(path: str | Path) -> Matrix:
    """The matrix in the TOML file at ``path`` (a ``[matrix]`` table, module docstring)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise MatrixError(f"matrix file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"cannot read matrix file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path} is not valid TOML: {exc}") from None
    table = doc.get("matrix")
    if not isinstance(table, dict):
        raise MatrixError(f"{path}: no [matrix] table")
    _check_keys(table, {"runners", "models", "targets"}, path, "[matrix]")
    runners = _strings(table.get("runners", ["linux"]), path, "[matrix]", "runners")
    bad = [r for r in runners if r not in RUNNERS]
    if bad or "linux" not in runners:
        raise _error(path, "[matrix]", f"runners are {', '.join(RUNNERS)} and include linux; "
                                       f"got {', '.join(runners)}")
    return Matrix(path, runners, tuple(_models(table.get("models"), path)),
                  tuple(_targets(table.get("targets"), path)))
