"""The op registry and the specs in it: names, lookup, duplicates, parameter validation, and that
every spec carries what the rest of gatex relies on."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gatex.errors import (
    BadInputError,
    DuplicateRegistrationError,
    ParameterRangeError,
    UnknownOpError,
)
from gatex.ops import REGISTRY, OpRegistry, OpSpec, get_op
from ops_cases import OPS_MD_NAMES



def test_every_op_of_ops_md_is_registered_and_nothing_else_of_gatex_own() -> None:
    """OPS.md's ops are gatex's own (an op added in-tree is added to OPS.md too); ops that
    entry points register come after them."""
    from gatex.ops import BUILTIN_OPS

    assert sorted(BUILTIN_OPS) == sorted(OPS_MD_NAMES)
    assert list(REGISTRY.names())[:len(BUILTIN_OPS)] == list(BUILTIN_OPS)


@pytest.mark.parametrize("name", OPS_MD_NAMES)
def test_lookup_by_name_id_torch_name_and_case(name: str) -> None:
    spec = REGISTRY.get(name)
    assert spec.name == name
    assert spec.id == f"gatex::{name}"
    assert spec.torch_qualname == f"gatex::{spec.torch_name}"
    for alias in (spec.id, spec.torch_name, spec.torch_qualname, name.upper(), name.lower(),
                  name.replace("_", "")):
        assert REGISTRY.get(alias) is spec, alias
        assert alias in REGISTRY
    assert get_op(name) is spec


def test_unknown_name_raises_with_suggestion() -> None:
    with pytest.raises(UnknownOpError, match=r"did you mean .*paGLU") as info:
        REGISTRY.get("paGLUU")
    assert isinstance(info.value, BadInputError) and info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message and "gatex units" in message
    with pytest.raises(UnknownOpError) as info:
        REGISTRY.get("no_such_thing_at_all")
    assert "did you mean" not in str(info.value)
    assert "no_such_thing_at_all" not in REGISTRY and 3 not in REGISTRY


def private_spec(**changes) -> OpSpec:
    """A copy of GoLU's spec with its own (empty) lowering tables: never touches REGISTRY."""
    return dataclasses.replace(REGISTRY.get("GoLU"), lowerings={}, unsupported_reasons={},
                               **changes)


def test_private_registry_rejects_duplicates() -> None:
    registry = OpRegistry()
    spec = private_spec()
    registry.register(spec)
    assert registry.get("golu") is spec and len(registry) == 1
    with pytest.raises(DuplicateRegistrationError):
        registry.register(spec)
    # a different name whose torch name collides is a duplicate too
    with pytest.raises(DuplicateRegistrationError):
        registry.register(private_spec(name="GoLU2"))
    with pytest.raises(DuplicateRegistrationError):                 # case/underscore alias
        registry.register(private_spec(name="go_lu", torch_name="golu_other"))
    assert len(registry) == 1 and len(REGISTRY) == len(OPS_MD_NAMES)


def test_lowering_registered_twice_raises() -> None:
    spec = private_spec()

    @spec.lowering("onnx")
    def first(*args):  # pragma: no cover - never called
        return None

    assert spec.lowerings["onnx"] is first and "onnx" in spec.backends()
    with pytest.raises(DuplicateRegistrationError):
        spec.lowering("onnx")(lambda *args: None)
    spec.unsupported("coreml", "no fp16 erf on the ANE")
    with pytest.raises(DuplicateRegistrationError):
        spec.lowering("coreml")(lambda *args: None)
    with pytest.raises(DuplicateRegistrationError):
        spec.unsupported("onnx", "changed my mind")
    with pytest.raises(ValueError):
        spec.lowering("tflite")
    assert REGISTRY.get("GoLU").lowerings.get("onnx") is not first   # the global spec is untouched


@pytest.mark.parametrize("op,params,fragment", [
    ("paGLU", {"alpha": 1.5}, r"alpha.*\[0, 1\]"),
    ("paGLU", {"alpha": -0.1}, r"alpha.*\[0, 1\]"),
    ("paGLU", {"alpha": torch.tensor([0.2, 1.2])}, r"alpha.*\[0, 1\]"),
    ("paGLU", {"alpha": float("nan")}, "finite"),
    ("paGLU", {"alpha": "0.5"}, "number"),
    ("GoLU", {"beta": -1.0}, r"beta.*\[0, inf\]"),
    ("GoLU", {"gamma": -0.5}, "gamma"),
    ("PGConv2d", {"abits": 1}, r"abits.*\[2, 16\]"),
    ("PGConv2d", {"wbits": 4.0}, "integer"),
    ("PGConv2d", {"stride": (1, "2")}, "tuple of integers"),
    ("GatedDense", {"activation": "softmax"}, "one of"),
    ("paUnit", {"gate": "swish2"}, "one of"),
    ("GoLU", {"delta": 1.0}, "no parameter delta"),
    ("ZiLU", {"sigma": 1.0, "tau": 2.0}, "no parameter tau"),
])
def test_validate_params_rejects(op: str, params: dict, fragment: str) -> None:
    with pytest.raises(ParameterRangeError, match=fragment) as info:
        REGISTRY.get(op).validate_params(**params)
    message = str(info.value)
    assert op in message and "\n" not in message
    assert info.value.exit_code == 2


def test_validate_params_fills_defaults_and_accepts_edges() -> None:
    assert REGISTRY.get("GoLU").validate_params() == {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}
    assert REGISTRY.get("GoLU").validate_params(beta=0.0)["beta"] == 0.0
    assert REGISTRY.get("paGLU").validate_params(alpha=1.0)["alpha"] == 1.0
    assert REGISTRY.get("paGLU").validate_params(alpha=torch.tensor([0.0, 1.0]))
    pg = REGISTRY.get("PGConv2d").validate_params(abits=2, act_scale=None, stride=[2, 2])
    assert pg["abits"] == 2 and pg["act_scale"] is None


@pytest.mark.parametrize("name", OPS_MD_NAMES)
def test_every_spec_is_complete(name: str) -> None:
    spec = REGISTRY.get(name)
    for text in (spec.formula, spec.source, spec.summary):
        assert isinstance(text, str) and text.strip()
    assert spec.source.startswith("https://github.com/")
    assert spec.inputs and all(i in spec.inputs for i in spec.optional_inputs)
    assert set(spec.dtypes) <= {"float64", "float32", "float16", "bfloat16"}
    for dtype in spec.dtypes:
        tol = spec.tolerance(dtype)
        assert 0 < tol.rtol < 0.1 and 0 < tol.atol < 0.1, (dtype, tol)
        assert spec.tolerance(getattr(torch, dtype)) == tol
    # tighter for wider dtypes
    order = [d for d in ("float64", "float32", "float16") if d in spec.dtypes]
    rtols = [spec.tolerance(d).rtol for d in order]
    assert rtols == sorted(rtols)
    assert spec.tolerance("bfloat16").rtol >= spec.tolerance("float16").rtol
    assert callable(spec.reference) and callable(spec.impl)
    # every param default is itself valid, and documented
    spec.validate_params()
    assert all(p.doc for p in spec.params)
    # the torch custom op exists under the qualified name and takes inputs then params
    op = spec.torch_op
    schema = op.default._schema
    assert schema.name == spec.torch_qualname
    arg_names = [a.name for a in schema.arguments]
    assert arg_names == [*spec.inputs, *(p.name for p in spec.params)]
    assert getattr(torch.ops.gatex, spec.torch_name) is op
