#!/usr/bin/env python3
"""Build a TensorRT engine from a gatex plugin-flavor ONNX: define gatex's plugins, parse, build.

This file is standalone (standard library + ``tensorrt`` only): ``gatex export --to trt`` copies
it verbatim into its bundle as ``build_engine.py``, and gatex imports it to build in process.

    python build_engine.py MODEL.onnx [--engine OUT.engine] [--kernels kernels.json]
                           [--timing-cache timing.cache] [--min-batch 1] [--opt-batch 32]
                           [--max-batch 512] [--plan plan.json]

Plugins are TensorRT "quickly deployable plugins" (``tensorrt.plugin``, TensorRT 10.7+) with an
ahead-of-time implementation only (``@trtp.aot_impl``): the kernels are PTX compiled from gatex's
Triton kernels, embedded in the engine, so the engine runs under plain ``trtexec`` or the C++
runtime with no Python. The PTX comes from ``kernels.json`` (compiled by gatex on the export
machine for sm_80, PTX ISA 8.0, which the driver JIT-compiles for any newer GPU) or, when the
bundle has none, is compiled here by gatex (``pip install 'gatex[triton]'``).

Written against TensorRT's documented Python API (never run: no TensorRT where gatex was
written; see docs/tensorrt.md):
- ``tensorrt.plugin.register / autotune / aot_impl``, ``KernelLaunchParams``, ``SymIntExprs``,
  ``SymInt32``, ``cdiv``: the API reference pages trt_plugin_register, trt_plugin_autotune,
  trt_plugin_aot_impl (schema ``(inputs..., attrs..., outputs, tactic) -> (kernel name, PTX,
  KernelLaunchParams, SymExprs)``) and the sample samples/python/quickly_deployable_plugins
  (qdp_defs.py: int32 extra arguments between the input and output pointers).
- The ONNX parser maps a node to a plugin by ``op_type`` = plugin name and a
  ``plugin_namespace`` attribute; ``aot=1`` on the node selects the AOT implementation (same
  sample's README, "ONNX model with an AOT plugin").
- ``Builder``, ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (TensorRT 11: precision comes
  from the ONNX types; there is no fp16 builder flag), ``OnnxParser.parse_from_file``,
  optimization profiles, ``IBuilderConfig.create_timing_cache / set_timing_cache``,
  ``build_serialized_network``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable

NAMESPACE = "gatex"
ATTRIBUTE_TYPES = {"float": float, "str": str, "int": int}
ENGINE_NAME_PREFIX = "gatex "   # the network (and so the engine) name: prefix + JSON plan

# TensorRT's plugin registry takes one definition per plugin and process: plugins are defined
# once, and their aot_impl asks whichever kernel source the latest define_plugins call named
_DEFINED: set[str] = set()
_kernel_source: list[Callable[[str, dict[str, Any], str], dict[str, Any]]] = []


def _param(name: str, annotation: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)


def _with_signature(fn: Callable[..., Any], name: str, params: list[inspect.Parameter],
                    returns: Any) -> Callable[..., Any]:
    # tensorrt.plugin reads a plugin function's inputs and attributes from its signature
    # (inspect.signature, which honours __signature__); one generic body serves every plugin
    sig = inspect.Signature(params, return_annotation=returns)
    fn.__signature__ = sig  # type: ignore[attr-defined]
    fn.__name__ = fn.__qualname__ = name
    return fn


def dtype_name(trt: Any, dtype: Any) -> str:
    """fp32 | fp16 | bf16 for a TensorRT data type."""
    names = {trt.float32: "fp32", trt.float16: "fp16", trt.bfloat16: "bf16"}
    if dtype not in names:
        raise ValueError(f"gatex plugins take float32, float16 or bfloat16 tensors, not {dtype}")
    return names[dtype]


def define_plugins(trtp: Any, trt: Any, plugins: list[dict[str, Any]],
                   kernel_for: Callable[[str, dict[str, Any], str], dict[str, Any]],
                   impl_for: Callable[[str], Callable[..., None]] | None = None) -> list[str]:
    """Register each plugin of ``plugins`` with ``tensorrt.plugin``; returns the plugin ids.

    ``plugins``: ``{"name": "GoLU", "inputs": ["x"], "attributes": {"alpha": "float", ...}}``.
    ``kernel_for(name, attributes, dtype)`` returns a compiled kernel (``name``, ``ptx``,
    ``block``, ``num_warps``, ``shared``) for ``aot_impl``; ``impl_for(name)``, when given,
    returns a just-in-time implementation ``(inputs, attributes, outputs, stream)``. A plugin
    already defined in this process is not defined again; ``kernel_for`` replaces the kernel
    source of every plugin defined so far.
    """
    _kernel_source[:] = [kernel_for]
    ids = []
    for plugin in plugins:
        plugin_id = f"{NAMESPACE}::{plugin['name']}"
        if plugin_id not in _DEFINED:
            _define_plugin(trtp, trt, plugin, impl_for)
            _DEFINED.add(plugin_id)
        ids.append(plugin_id)
    return ids


def _define_plugin(trtp: Any, trt: Any, plugin: dict[str, Any],
                   impl_for: Callable[[str], Callable[..., None]] | None) -> str:
    name, inputs = plugin["name"], list(plugin["inputs"])
    attrs = {k: ATTRIBUTE_TYPES[t] for k, t in plugin["attributes"].items()}
    plugin_id = f"{NAMESPACE}::{name}"

    def bind(fn_params: list[inspect.Parameter], args: tuple, kwargs: dict) -> dict[str, Any]:
        return inspect.Signature(fn_params).bind(*args, **kwargs).arguments

    # register: (inputs: TensorDesc..., attributes...) -> TensorDesc; the output is the first
    # input's shape and dtype (elementwise, inputs of one shape in the plugin graph)
    reg_params = [_param(i, trtp.TensorDesc) for i in inputs] + \
        [_param(a, t) for a, t in attrs.items()]

    def register(*args: Any, **kwargs: Any) -> Any:
        return bind(reg_params, args, kwargs)[inputs[0]].like()

    trtp.register(plugin_id)(_with_signature(register, f"{name}_desc", reg_params,
                                             trtp.TensorDesc))

    # autotune: every input and the output share one of fp32, fp16, bf16; linear layout
    tune_params = [_param(i) for i in inputs] + [_param("outputs")]
    types = ", ".join(["FP32|FP16|BF16"] * (len(inputs) + 1))

    def autotune(*args: Any, **kwargs: Any) -> list[Any]:
        return [trtp.AutoTuneCombination(types, "LINEAR")]

    trtp.autotune(plugin_id)(_with_signature(autotune, f"{name}_autotune", tune_params,
                                             typing.List[trtp.AutoTuneCombination]))

    # aot_impl: (inputs..., attributes..., outputs, tactic) -> (kernel name, PTX, launch
    # parameters, extra int32 kernel arguments). The kernel takes (inputs..., n, output).
    aot_params = [_param(i) for i in inputs] + [_param(a, t) for a, t in attrs.items()] + \
        [_param("outputs"), _param("tactic", int)]
    aot_returns = typing.Tuple[typing.Union[str, bytes], typing.Union[str, bytes],
                               trtp.KernelLaunchParams, trtp.SymExprs]

    def aot_impl(*args: Any, **kwargs: Any) -> tuple[Any, Any, Any, Any]:
        bound = bind(aot_params, args, kwargs)
        first = bound[inputs[0]]
        values = {a: bound[a] for a in attrs}
        kernel = _kernel_source[0](name, values, dtype_name(trt, first.dtype))
        n = first.shape_expr.numel()
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(n, kernel["block"])
        launch.block_x = kernel["num_warps"] * 32
        launch.shared_mem = kernel["shared"]
        extra = trtp.SymIntExprs(1)
        extra[0] = trtp.SymInt32(n)
        return kernel["name"].encode(), kernel["ptx"].encode(), launch, extra

    trtp.aot_impl(plugin_id)(_with_signature(aot_impl, f"{name}_aot_impl", aot_params,
                                             aot_returns))

    if impl_for is not None:
        # impl: (inputs..., attributes..., outputs, stream) -> None, run just in time
        impl_params = [_param(i) for i in inputs] + [_param(a, t) for a, t in attrs.items()] + \
            [_param("outputs"), _param("stream", int)]
        run = impl_for(name)

        def impl(*args: Any, **kwargs: Any) -> None:
            bound = bind(impl_params, args, kwargs)
            run([bound[i] for i in inputs], {a: bound[a] for a in attrs}, bound["outputs"],
                bound["stream"])

        trtp.impl(plugin_id)(_with_signature(impl, f"{name}_impl", impl_params, None))
    return plugin_id


def same_attributes(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Attribute sets equal up to float32 rounding (ONNX stores float attributes as float32)."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if x != y and abs(x - y) > 1e-6 * max(abs(x), abs(y)):
                return False
        elif x != y:
            return False
    return True


def kernels_from_file(path: str | Path) -> Callable[[str, dict[str, Any], str], dict[str, Any]]:
    """``kernel_for`` over the precompiled kernels of a bundle's kernels.json."""
    entries = json.loads(Path(path).read_text())["kernels"]

    def kernel_for(name: str, attributes: dict[str, Any], dtype: str) -> dict[str, Any]:
        for e in entries:
            if e["plugin"] == name and e["dtype"] == dtype and \
                    same_attributes(e["attributes"], attributes):
                return e
        raise KeyError(f"{path} has no {dtype} kernel for {name} with {attributes}; re-export "
                       "with gatex, or delete kernels.json to compile the kernels here")

    return kernel_for


def kernels_from_gatex() -> Callable[[str, dict[str, Any], str], dict[str, Any]]:
    """``kernel_for`` compiling with gatex's Triton kernels for this machine's GPU (gatex is
    imported only if a plugin kernel is needed)."""
    def kernel_for(name: str, attributes: dict[str, Any], dtype: str) -> dict[str, Any]:
        # this script ships verbatim in every bundle and runs without gatex: it reaches an
        # installed gatex as it reaches TensorRT, as an optional package looked up by name
        import importlib

        plugins = importlib.import_module("gatex.ops.kernels.trt_plugins")
        return plugins.compile_for_this_gpu(name, attributes, dtype)

    return kernel_for


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_engine(onnx_path: str | Path, engine_path: str | Path, *,
                 plugins: list[dict[str, Any]],
                 kernel_for: Callable[[str, dict[str, Any], str], dict[str, Any]],
                 timing_cache: str | Path | None = None, batch: tuple[int, int, int] = (1, 32, 512),
                 plan: dict[str, Any] | None = None, log: Callable[[str], None] = print,
                 profiles: dict[str, Any] | None = None) -> Path:
    """Parse ``onnx_path`` with gatex's plugins defined, build a strongly typed engine, save it
    (and the timing cache) atomically; returns the engine path.

    ``batch`` = (min, opt, max) for every dimension named ``batch``; ``profiles`` (plan.json's,
    written by gatex: per input, each axis' dimension name and (min, opt, max)) for the other
    named dimensions (``seq``, ...). Without ``profiles``, every dynamic dimension gets ``batch``.
    ``plan`` (gatex's plugin decisions) becomes the network's name, which TensorRT keeps as the
    engine's name (``ICudaEngine.name``).
    """
    import tensorrt as trt
    import tensorrt.plugin as trtp

    logger = trt.Logger(trt.Logger.WARNING)
    used = _plugins_in(onnx_path, plugins)
    define_plugins(trtp, trt, used, kernel_for)
    builder = trt.Builder(logger)
    flags = 0
    for flag in ("STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS"):
        if hasattr(trt.NetworkDefinitionCreationFlag, flag):
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, flag))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    if plan is not None:
        network.name = ENGINE_NAME_PREFIX + json.dumps(plan, separators=(",", ":"))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = tuple(t.shape)
        if any(d < 0 for d in dims):
            dynamic = True
            lo, opt, hi = _profile_shapes(dims, batch, (profiles or {}).get(t.name))
            profile.set_shape(t.name, lo, opt, hi)
    if dynamic:
        config.add_optimization_profile(profile)
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log "
                           "above)")
    engine_path = Path(engine_path)
    _atomic_write(engine_path, bytes(serialized))
    if timing_cache is not None:
        _atomic_write(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    log(f"wrote {engine_path} ({engine_path.stat().st_size / 1024:.1f} KiB)"
        + (f" and timing cache {timing_cache}" if timing_cache is not None else ""))
    return engine_path


def _profile_shapes(dims: tuple[int, ...], batch: tuple[int, int, int],
                    known: dict[str, Any] | None) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes of one input: fixed sizes kept, ``batch`` axes from ``batch``,
    other named axes from gatex's profile, any other dynamic axis from ``batch``."""
    shapes: list[list[int]] = [[], [], []]
    for axis, d in enumerate(dims):
        if d >= 0:
            triple = (d, d, d)
        elif known and axis < len(known["names"]) and known["names"][axis] not in (None, "batch"):
            triple = tuple(known["profile"][axis])
        else:
            triple = batch
        for k in range(3):
            shapes[k].append(int(triple[k]))
    return tuple(tuple(s) for s in shapes)


def _plugins_in(onnx_path: str | Path, plugins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # only the plugins the model uses (read from the ONNX without the onnx package: the op
    # types are plain strings in the protobuf; a false positive only defines a spare plugin)
    data = Path(onnx_path).read_bytes()
    return [p for p in plugins if p["name"].encode() in data]


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="Build a TensorRT engine from a gatex bundle.")
    ap.add_argument("onnx", nargs="?", type=Path, help="the bundle's .onnx (default: the only "
                    "one next to this script)")
    ap.add_argument("--engine", type=Path, help="output engine (default: MODEL.engine)")
    ap.add_argument("--kernels", type=Path, default=here / "kernels.json",
                    help="precompiled plugin kernels (default: kernels.json beside this script; "
                         "without it gatex compiles them here)")
    ap.add_argument("--plan", type=Path, default=here / "plan.json",
                    help="gatex's plan (plugins, decisions), stored as the engine's name")
    ap.add_argument("--timing-cache", type=Path, default=here / "timing.cache")
    ap.add_argument("--min-batch", type=int, default=1)
    ap.add_argument("--opt-batch", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=512)
    args = ap.parse_args(argv)
    onnx_path = args.onnx
    if onnx_path is None:
        found = sorted(here.glob("*.onnx"))
        if len(found) != 1:
            ap.error(f"give the .onnx to build ({len(found)} found in {here})")
        onnx_path = found[0]
    if not args.plan.is_file():
        ap.error(f"{args.plan} not found: it lists the plugins the model needs")
    plan = json.loads(args.plan.read_text())
    kernel_for = kernels_from_file(args.kernels) if args.kernels.is_file() else \
        kernels_from_gatex()
    try:
        build_engine(onnx_path, args.engine or onnx_path.with_suffix(".engine"),
                     plugins=plan["plugins"], kernel_for=kernel_for,
                     timing_cache=args.timing_cache,
                     batch=(args.min_batch, args.opt_batch, args.max_batch),
                     plan={k: plan[k] for k in ("gatex", "unit", "precision", "decisions")
                           if k in plan}, profiles=plan.get("profiles"))
    except (RuntimeError, KeyError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
