"""Upstream Gated BERT Keras weight files -> `GatedBert`, read with h5py (no TensorFlow).

Two layouts (both HDF5, read as plain datasets: h5py never unpickles anything):

- Keras 2 (``model.save("m.h5")`` / ``save_weights("w.h5")``): root or ``model_weights/``
  holds one group per top-level layer, listed in attr ``layer_names``; each layer group lists
  its variables in attr ``weight_names`` ("transformer_block_0/transformer_block_0_mha/
  transformer_block_0_mha_wq/kernel:0"). Upstream's layer names identify each tensor.
- Keras 3 (``*.weights.h5``): ``layers/<snake_case class name>[_n]/<attribute>/.../vars/<i>``;
  Keras 3 addresses layers by class name and attribute, not by layer name, and variables by
  creation order (GatedDense: 0 kernel, 1 bias, 2 gates; LayerNormalization: 0 gamma, 1 beta).

Upstream's pruning layers carry training state that inference does not need:
MovementGatedDense ``movement_scores``, SptGatedDense ``reward_buffer`` / ``reward_count``;
optimizer state may be saved too. The loader drops all of it and lists it in the report.

Kernels stay in Keras layout (in, out), which `GatedDense` keeps; ``fold=True`` replaces each
GatedDense by an ``nn.Linear`` with weight (K * G).T. Upstream's double-negated attention mask
is reproduced by default (``attention="upstream"``; see `gatex.models.gated_bert`), and the
report says so.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatex import _io, _optional
from gatex.errors import BadInputError
from gatex.models.gated_bert import SIZES, GatedBert, GatedBertConfig, _check_attention
from gatex.models.gated_dense import GatedDense

UPSTREAM_ATTENTION_NOTE = (
    "attention='upstream': upstream adds +1e18 (its mask negated twice) to real tokens, so "
    "attention is a uniform mean over real tokens, as these weights were trained; pass "
    "attention='corrected' for standard masked softmax attention")

#: Block sublayer (gatex module path) -> Keras 2 layer-name suffix and Keras 3 attribute path.
_BLOCK_PARTS = {
    "mha.wq": ("_mha_wq", "mha/wq"), "mha.wk": ("_mha_wk", "mha/wk"),
    "mha.wv": ("_mha_wv", "mha/wv"), "mha.dense": ("_mha_output", "mha/dense"),
    "ffn_layer1": ("_ffn1", "ffn_layer1"), "ffn_layer2": ("_ffn2", "ffn_layer2"),
    "layernorm1": ("_ln1", "layernorm1"), "layernorm2": ("_ln2", "layernorm2"),
}
_DENSE_VARS = ("kernel", "bias", "gates")
_NORM_VARS = ("gamma", "beta")
_KERAS2_BLOCK = re.compile(r"^(?:spt_|movement_)?transformer_block_(\d+)$")
_KERAS3_BLOCK = re.compile(r"^(spt_|movement_)?gated_transformer_block(?:_(\d+))?$")
_PRUNING_STATE = {"spt_": ("reward_buffer", "reward_count"), "movement_": ("movement_scores",)}


@dataclass
class KerasLoadReport:
    """What `load_gated_bert` read, kept, dropped and how the model will attend."""

    path: str
    layout: str                                  # "keras2" | "keras3"
    config: GatedBertConfig
    attention: str
    folded: bool
    dropped: list[str] = field(default_factory=list)
    sparsity: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def overall_sparsity(self) -> float:
        """Fraction of all gated weights switched off (weighted by size)."""
        sizes = self._sizes
        total = sum(sizes.values())
        return sum(self.sparsity[k] * sizes[k] for k in sizes) / total if total else 0.0

    _sizes: dict[str, int] = field(default_factory=dict, repr=False)


def _h5py() -> Any:
    return _optional.require("h5py")


def _name(raw: Any) -> str:
    return raw.decode("utf8") if isinstance(raw, bytes) else str(raw)


def _holds_data(node: Any) -> bool:
    """True when an HDF5 node is, or contains, a dataset (Keras 3 writes empty ``vars``)."""
    if not hasattr(node, "visititems"):
        return True
    return node.visititems(lambda _, obj: True if not hasattr(obj, "keys") else None) is True


def _read_keras2(root: Any) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """{innermost layer name: {var: array}} from a Keras 2 HDF5 file, and non-layer groups."""
    layers: dict[str, dict[str, np.ndarray]] = {}
    for top in (_name(n) for n in root.attrs["layer_names"]):
        if top not in root:
            raise BadInputError(f"Keras file lists layer {top!r} but has no group for it")
        group = root[top]
        for wname in (_name(n) for n in group.attrs.get("weight_names", [])):
            if wname not in group:
                raise BadInputError(f"Keras file: layer {top!r} lists weight {wname!r} but "
                                    "has no dataset for it")
            parts = wname.split("/")
            owner = parts[-2] if len(parts) > 1 else top
            var = parts[-1].split(":", 1)[0]
            layers.setdefault(owner, {})[var] = np.asarray(group[wname][()])
    return layers, []


def _read_keras3(root: Any) -> dict[str, list[np.ndarray]]:
    """{"layers/.../<owner>": [vars in creation order]} from a Keras 3 .weights.h5 file."""
    found: dict[str, list[np.ndarray]] = {}

    def visit(name: str, obj: Any) -> None:
        parent, _, leaf = name.rpartition("/")
        if leaf == "vars" and hasattr(obj, "keys"):
            keys = sorted(obj.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            found[f"layers/{parent}"] = [np.asarray(obj[k][()]) for k in keys]

    root.visititems(visit)
    return found


def check_hdf5_tree(f: Any, path: str) -> None:
    """Bad input unless every node of the file lives in the file and declares no more than it
    stores: no external links, no external raw storage, no virtual datasets (all three make
    HDF5 read other files), and no dataset whose declared size is out of proportion to what
    the file holds (an unwritten 10^7 x 256 dataset in a 40 KB file reads as gigabytes of fill
    values). Runs before any dataset is read."""
    h5py = _h5py()
    seen: set[Any] = set()
    stack = [("", f)]
    while stack:
        prefix, group = stack.pop()
        if group.id in seen:
            continue
        seen.add(group.id)
        for key in group:
            name = f"{prefix}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise BadInputError(f"{path}: {name} is an external link to "
                                    f"{link.filename}:{link.path}; refusing to read another file")
            if isinstance(link, h5py.SoftLink):
                continue  # an alias of a node inside the file: reached through its own path
            node = group[key]
            if isinstance(node, h5py.Group):
                stack.append((name, node))
            elif isinstance(node, h5py.Dataset):
                _check_dataset(node, name, path)


def _check_dataset(ds: Any, name: str, path: str) -> None:
    if ds.external:
        raise BadInputError(f"{path}: dataset {name} keeps its data in external file(s) "
                            f"{', '.join(str(e[0]) for e in ds.external)}; refusing to read "
                            "another file")
    if ds.is_virtual:
        raise BadInputError(f"{path}: dataset {name} is a virtual dataset (its data lives in "
                            "other files); refusing to read it")
    declared = int(ds.size) * ds.dtype.itemsize
    where = f"{path}: dataset {name} ({'x'.join(map(str, ds.shape)) or 'scalar'} {ds.dtype})"
    _io.check_size(declared, where, "model")
    stored = ds.id.get_storage_size()
    compressed = ds.id.get_create_plist().get_nfilters() > 0
    if declared > 4096 and not compressed and stored < declared:
        raise BadInputError(f"{where} declares {declared} bytes but the file stores {stored}: "
                            "not a weight file gatex can trust")


class _Source:
    """Tensors by gatex module path, from either layout, plus what was dropped."""

    def __init__(self, path: str) -> None:
        h5py = _h5py()
        self.path = path
        if zipfile.is_zipfile(path):
            raise BadInputError(f"{path}: a zip archive (a Keras 3 .keras file?); extract its "
                                "model.weights.h5 and load that")
        self.tensors: dict[str, dict[str, np.ndarray]] = {}
        self.dropped: list[str] = []
        try:
            with h5py.File(path, "r") as f:
                self._read(f)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, BadInputError):
                raise
            raise BadInputError(f"{path}: not a readable Keras HDF5 weight file "
                                f"({type(exc).__name__}: {exc})") from None

    def _read(self, f: Any) -> None:
        check_hdf5_tree(f, self.path)
        if "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f:
            self.layout = "keras3"
            self._map_keras3(_read_keras3(f["layers"]))
            self.dropped += [f"{k}/ (not model weights)" for k in f
                             if k != "layers" and _holds_data(f[k])]
            return
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise BadInputError(f"{self.path}: neither a Keras 2 HDF5 file (no 'layer_names') "
                                "nor a Keras 3 .weights.h5 file (no 'layers' group)")
        self.layout = "keras2"
        self.dropped += [f"{k}/ (not model weights)" for k in f
                         if "model_weights" in f and k != "model_weights"]
        self._map_keras2(_read_keras2(root)[0])

    def _keep(self, module: str, values: dict[str, np.ndarray], expected: tuple[str, ...],
              label: str) -> None:
        self.tensors[module] = {k: values[k] for k in expected if k in values}
        self.dropped += [f"{label}/{k}" for k in values if k not in expected]

    def _map_keras2(self, layers: dict[str, dict[str, np.ndarray]]) -> None:
        blocks: dict[int, str] = {}
        # block names are the prefix of their sublayers: find them through the suffixes
        for owner in list(layers):
            for suffix, _ in _BLOCK_PARTS.values():
                if owner.endswith(suffix):
                    match = _KERAS2_BLOCK.match(owner[: -len(suffix)])
                    if match:
                        blocks[int(match.group(1))] = owner[: -len(suffix)]
        used = set()
        for i, block in sorted(blocks.items()):
            for module, (suffix, _) in _BLOCK_PARTS.items():
                owner = block + suffix
                if owner in layers:
                    used.add(owner)
                    expected = _NORM_VARS if module.startswith("layernorm") else _DENSE_VARS
                    self._keep(f"blocks.{i}.{module}", layers[owner], expected, owner)
        singles = {"token_embedding": ("token_embedding", ("embeddings",)),
                   "pos_embedding": ("position_embedding", ("embeddings",)),
                   "position_embedding": ("position_embedding", ("embeddings",)),
                   "embedding_layernorm": ("embedding_layernorm", _NORM_VARS),
                   "classifier": ("classifier", _DENSE_VARS),
                   "regressor": ("classifier", _DENSE_VARS)}
        for owner, (module, expected) in singles.items():
            if owner in layers:
                used.add(owner)
                self._keep(module, layers[owner], expected, owner)
        self.dropped += [f"{owner}/{var} (unknown layer)" for owner in layers
                         if owner not in used for var in layers[owner]]

    def _map_keras3(self, found: dict[str, list[np.ndarray]]) -> None:
        def take(path: str, module: str, expected: tuple[str, ...], extra: tuple[str, ...] = ()):
            values = found.pop(path, None)
            if values is None:
                return
            names = list(expected) + list(extra)
            names += [f"vars/{j}" for j in range(len(names), len(values))]
            self._keep(module, dict(zip(names, values, strict=False)), expected, path)

        tops = {p.split("/")[1] for p in list(found)}
        for top in sorted(tops):
            match = _KERAS3_BLOCK.match(top)
            if match:
                i = int(match.group(2) or 0)
                extra = _PRUNING_STATE.get(match.group(1) or "", ())
                for module, (_, attr) in _BLOCK_PARTS.items():
                    norm = module.startswith("layernorm")
                    take(f"layers/{top}/{attr}", f"blocks.{i}.{module}",
                         _NORM_VARS if norm else _DENSE_VARS, () if norm else extra)
            elif top.endswith("gated_dense"):
                extra = _PRUNING_STATE.get(top.split("gated_dense")[0], ())
                take(f"layers/{top}", "classifier", _DENSE_VARS, extra)
        take("layers/embedding", "token_embedding", ("embeddings",))
        take("layers/positional_embedding/pos_embedding", "position_embedding", ("embeddings",))
        take("layers/layer_normalization", "embedding_layernorm", _NORM_VARS)
        for path, values in found.items():
            self.dropped += [f"{path}/vars/{j} (unknown layer)" for j in range(len(values))]

    def get(self, module: str) -> dict[str, np.ndarray]:
        if module not in self.tensors:
            raise BadInputError(f"{self.path}: no weights for layer {module!r} "
                                f"({self.layout} layout); is this an upstream Gated BERT file?")
        return self.tensors[module]


def _array(src: _Source, module: str, var: str, shape: tuple[int, ...]) -> torch.Tensor:
    values = src.get(module)
    if var not in values:
        raise BadInputError(f"{src.path}: layer {module!r} has no {var!r} "
                            f"(found {', '.join(values) or 'nothing'})")
    array = values[var]
    if tuple(array.shape) != shape:
        raise BadInputError(f"{src.path}: layer {module!r} {var} has shape "
                            f"{tuple(array.shape)} in the file; the model expects {shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(f"{src.path}: layer {module!r} {var} has dtype {array.dtype}; "
                            "expected floating point")
    if not np.isfinite(array).all():
        raise BadInputError(f"{src.path}: layer {module!r} {var} holds NaN or Inf")
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _shape(src: _Source, module: str, var: str, ndim: int) -> tuple[int, ...]:
    """The shape of ``module``'s ``var`` in the file ((0,) * ndim when absent: the shape check
    of the load then names what is missing); bad input when it has another rank."""
    array = src.get(module).get(var)
    if array is None:
        return (0,) * ndim
    if array.ndim != ndim:
        raise BadInputError(f"{src.path}: layer {module!r} {var} has shape {tuple(array.shape)} "
                            f"in the file; a {ndim}-D array is expected")
    return tuple(int(d) for d in array.shape)


def _infer_config(src: _Source, num_heads: int | None) -> GatedBertConfig:
    vocab, d_model = _shape(src, "token_embedding", "embeddings", 2)
    max_len = _shape(src, "position_embedding", "embeddings", 2)[0]
    layers = sum(1 for k in src.tensors if k.startswith("blocks.") and k.endswith(".mha.wq"))
    if layers == 0:
        raise BadInputError(f"{src.path}: no transformer blocks found; is this an upstream "
                            "Gated BERT file?")
    dff = _shape(src, "blocks.0.ffn_layer1", "kernel", 2)[-1]
    classes = _shape(src, "classifier", "kernel", 2)[-1]
    if num_heads is None:
        by_width = {hidden: heads for _, hidden, heads, _ in SIZES.values()}
        if d_model not in by_width:
            raise BadInputError(f"{src.path}: hidden size {d_model} is not an upstream preset "
                                "(256, 512, 768, 1024); pass num_heads")
        num_heads = by_width[d_model]
    return GatedBertConfig(num_layers=layers, d_model=int(d_model), num_heads=num_heads,
                           dff=int(dff), vocab_size=int(vocab), max_len=int(max_len),
                           num_classes=int(classes))


def _load_dense(src: _Source, module: str, layer: GatedDense) -> None:
    shape = (layer.in_features, layer.out_features)
    kernel = _array(src, module, "kernel", shape)
    bias = _array(src, module, "bias", (layer.out_features,))
    gates = (_array(src, module, "gates", shape) if "gates" in src.get(module)
             else torch.ones(shape))
    if not bool(((gates == 0) | (gates == 1)).all()):
        raise BadInputError(f"{src.path}: layer {module!r} gates are not 0/1")
    with torch.no_grad():
        layer.kernel.copy_(kernel)
        layer.bias.copy_(bias)
        layer.gates.copy_(gates)


def _load_norm(src: _Source, module: str, norm: torch.nn.LayerNorm) -> None:
    with torch.no_grad():
        norm.weight.copy_(_array(src, module, "gamma", tuple(norm.weight.shape)))
        norm.bias.copy_(_array(src, module, "beta", tuple(norm.bias.shape)))


def load_gated_bert(path: str | Path, *, attention: str = "upstream", fold: bool = False,
                    num_heads: int | None = None,
                    config: GatedBertConfig | None = None) -> tuple[GatedBert, KerasLoadReport]:
    """Build a `GatedBert` (eval mode) from an upstream Keras weight file.

    The shape (layers, hidden, ffn, vocab, max_len, classes) is read from the file; heads
    follow the upstream preset for the hidden size unless ``num_heads`` or ``config`` says.
    ``fold=True`` folds the gates into plain ``nn.Linear`` layers (identical outputs).
    Raises BadInputError (exit 2) for an unreadable file, a missing layer or a shape mismatch.
    """
    attention = _check_attention(attention)
    path = str(path)
    if not Path(path).is_file():
        raise BadInputError(f"{path}: no such file")
    src = _Source(path)
    config = config or _infer_config(src, num_heads)
    model = GatedBert(config, attention=attention)
    with torch.no_grad():
        model.token_embedding.weight.copy_(
            _array(src, "token_embedding", "embeddings", (config.vocab_size, config.d_model)))
        model.position_embedding.weight.copy_(
            _array(src, "position_embedding", "embeddings", (config.max_len, config.d_model)))
    _load_norm(src, "embedding_layernorm", model.embedding_layernorm)
    for i, block in enumerate(model.blocks):
        for module in _BLOCK_PARTS:
            target = block.get_submodule(module)
            if isinstance(target, GatedDense):
                _load_dense(src, f"blocks.{i}.{module}", target)
            else:
                _load_norm(src, f"blocks.{i}.{module}", target)
    _load_dense(src, "classifier", model.classifier)
    extra = sorted(k for k in src.tensors if k.startswith("blocks.")
                   and int(k.split(".")[1]) >= config.num_layers)
    if extra:
        raise BadInputError(f"{path}: file has {extra[0]!r} but the model has only "
                            f"{config.num_layers} blocks")
    gated = model.gated_layers()
    report = KerasLoadReport(
        path=path, layout=src.layout, config=config, attention=attention, folded=fold,
        dropped=src.dropped, sparsity={k: m.sparsity for k, m in gated.items()},
        notes=[UPSTREAM_ATTENTION_NOTE] if attention == "upstream" else [],
        _sizes={k: m.gates.numel() for k, m in gated.items()})
    if fold:
        model.fold_gates()
    return model.eval(), report
