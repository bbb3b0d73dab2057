"""Ahead-of-time compilation of the TensorRT plugin kernels to PTX (what ``aot_impl`` returns).

`compile_plugin_kernel` compiles `triton_gates.gated_flat1_kernel` / `gated_flat2_kernel` for one
op, its parameter values (compiled in as constants: TensorRT does not serialize the attributes of
an AOT plugin) and one I/O dtype, for a given GPU architecture. Triton compiles for a named
target without a GPU, so this runs (and is tested) on any machine with triton installed.

The kernel's parameters are (inputs..., n, output), the order TensorRT launches an AOT plugin's
kernel with: input pointers, the extra int32 arguments (``SymIntExprs``: here n), output
pointers. Triton (3.3 and newer) appends its global- and profile-scratch pointers to every kernel;
these kernels use no scratch memory, so `strip_unused_params` removes the unreferenced trailing
parameters from the PTX entry, leaving exactly the parameters TensorRT passes.

Needs triton; imported only where a plugin kernel is compiled.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gatex.errors import BackendUnavailableError, BadInputError
from gatex.ops.kernels.launch import BLOCK, flat_constexprs
from gatex.ops.kernels.plans import plan_for
from gatex.ops.registry import REGISTRY

TRITON_DTYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
DEFAULT_ARCH = 80            # sm_80 PTX: the driver JIT-compiles it for sm_80 and every newer GPU
DEFAULT_PTX_VERSION = 80     # PTX ISA 8.0 (CUDA 12.0): old enough for any CUDA 12 driver


@dataclass(frozen=True)
class CompiledKernel:
    """One AOT plugin kernel: what ``aot_impl`` hands TensorRT, plus how it was made."""

    plugin: str               # op name, e.g. "GoLU"
    dtype: str                # fp32 | fp16 | bf16 (inputs and output)
    attributes: dict[str, Any]
    name: str                 # the PTX entry (kernel) name
    ptx: str
    block: int                # elements per program: grid_x = cdiv(n, block)
    num_warps: int            # block_x = 32 num_warps threads
    shared: int               # bytes of shared memory per block
    n_params: int             # parameters of the PTX entry after stripping: inputs + 2
    arch: int
    ptx_version: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _import_triton() -> Any:
    try:
        import triton
    except ImportError as exc:
        raise BackendUnavailableError(
            f"compiling the TensorRT plugin kernels needs triton ({exc}); pip install "
            "'gatex[triton]'") from None
    return triton


def _ast_source(triton: Any, fn: Any, signature: dict[str, str], constexprs: dict[str, Any]
                ) -> Any:
    # Triton renamed ASTSource's `constants` to `constexprs` (3.2); take whichever it has
    params = inspect.signature(triton.compiler.ASTSource.__init__).parameters
    key = "constexprs" if "constexprs" in params else "constants"
    return triton.compiler.ASTSource(fn=fn, signature=signature, **{key: constexprs})


def compile_plugin_kernel(op: str, attributes: Mapping[str, Any], dtype: str, *,
                          arch: int = DEFAULT_ARCH, ptx_version: int | None = DEFAULT_PTX_VERSION
                          ) -> CompiledKernel:
    """PTX of ``op``'s plugin kernel with ``attributes`` (the ONNX node's values) for ``dtype``
    I/O, compiled for ``sm_<arch>``.

    >>> k = compile_plugin_kernel("GoLU", {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}, "fp16")
    >>> k.name.startswith("gatex_golu_fp16_"), k.n_params
    (True, 3)
    """
    if dtype not in TRITON_DTYPES:
        raise BadInputError(f"plugin kernels take {', '.join(TRITON_DTYPES)}; got {dtype!r}")
    triton = _import_triton()
    from triton.backends.compiler import GPUTarget

    from gatex.ops.kernels import triton_gates

    plan = plan_for(op, attributes)
    p = float(attributes.get(plan.p_param, 0.0)) if plan.p_param else 0.0
    if plan.p_param and plan.p_param not in attributes:

        p = float(REGISTRY.get(op).param(plan.p_param).default)
    ty = TRITON_DTYPES[dtype]
    if plan.two_inputs:
        fn, signature = triton_gates.gated_flat2_kernel, {"v_ptr": f"*{ty}", "u_ptr": f"*{ty}"}
    else:
        fn, signature = triton_gates.gated_flat1_kernel, {"x_ptr": f"*{ty}"}
    signature |= {"n": "i32", "out_ptr": f"*{ty}"}
    n_params = len(signature)
    constexprs = flat_constexprs(plan, p)
    signature |= {k: "constexpr" for k in constexprs}
    # fused multiply-add on, said explicitly (Triton 3.9 warns that its default will change)
    options: dict[str, Any] = {"num_warps": 4, "enable_fp_fusion": True}
    if ptx_version is not None:
        options["ptx_version"] = ptx_version
    compiled = triton.compile(_ast_source(triton, fn, signature, constexprs),
                              target=GPUTarget("cuda", arch, 32), options=options)
    meta = compiled.metadata
    if getattr(meta, "global_scratch_size", 0) or getattr(meta, "profile_scratch_size", 0):
        raise RuntimeError(f"{op}: the plugin kernel asks for scratch memory, which TensorRT's "
                           "AOT launch cannot provide")
    ptx = strip_unused_params(compiled.asm["ptx"], meta.name, n_params)
    # one name per variant: an engine may hold several of these kernels side by side
    name = f"gatex_{op.lower()}_{dtype}_{hashlib.sha1(ptx.encode()).hexdigest()[:10]}"
    ptx = re.sub(r"\b" + re.escape(meta.name) + r"(?=\b|_param_)", name, ptx)
    return CompiledKernel(op, dtype, dict(attributes), name, ptx, BLOCK, meta.num_warps,
                          meta.shared, n_params, arch, ptx_version or 0)


def entry_params(ptx: str, name: str) -> list[str]:
    """The parameter names of the PTX entry ``name``, in order."""
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\(([^)]*)\)", ptx)
    if m is None:
        raise ValueError(f"no .entry {name} in the PTX")
    return re.findall(r"\.param\s+[^,]*?\s(\S+?)\s*(?:,|$)", m.group(1).strip())


def strip_unused_params(ptx: str, name: str, keep: int) -> str:
    """Drop the parameters of entry ``name`` after the first ``keep``, which must be unreferenced
    in the kernel body (Triton's scratch pointers for a kernel that uses none)."""
    m = re.search(r"(\.entry\s+" + re.escape(name) + r"\s*\()([^)]*)(\))", ptx)
    if m is None:
        raise ValueError(f"no .entry {name} in the PTX")
    decls = [d.strip() for d in m.group(2).split(",") if d.strip()]
    names = [d.split()[-1] for d in decls]
    body = ptx[m.end():]
    for dropped in names[keep:]:
        if re.search(re.escape(dropped) + r"\b", body):
            raise ValueError(f"parameter {dropped} of {name} is used; it cannot be dropped")
    params = ",\n".join("\t" + d for d in decls[:keep])
    return ptx[:m.start()] + m.group(1) + "\n" + params + "\n" + m.group(3) + ptx[m.end():]
