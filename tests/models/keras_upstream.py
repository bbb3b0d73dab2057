"""Upstream Gated BERT's Keras layers, re-expressed with ``keras.ops`` so they run on Keras 3's
torch backend (no TensorFlow here): the same class names, attribute names, layer names and
variable creation order as `royk1/gated-bert-pruning` (model_layers.py, spt_layers.py,
movement_layers.py, model_builder.py), which is all that decides a weight file's layout, and
the same math (post-LN blocks, ReLU FFN, eps 1e-6, the attention mask applied as
``logits += mask * -1e9`` to an input mask already scaled by -1e9, CLS head).

The tests save these models with Keras itself (``save_weights`` -> Keras 3 ``.weights.h5``,
``save(".h5")`` -> the legacy HDF5 layout) and load the files with gatex's h5py loader, so the
loader is checked against files Keras wrote rather than against our idea of them.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from keras import ops  # noqa: E402


class GatedDense(keras.layers.Layer):
    def __init__(self, units, activation=None, extra=(), **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.extra = tuple(extra)   # pruning state variables saved after the gates

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.gates = self.add_weight(name="gates", shape=shape, initializer="ones",
                                     trainable=False)
        for name in self.extra:
            setattr(self, name, self.add_weight(name=name, shape=shape, initializer="zeros",
                                                trainable=False))

    def call(self, inputs):
        out = ops.matmul(inputs, self.kernel * self.gates) + self.bias
        return self.activation(out) if self.activation is not None else out


class SptGatedDense(GatedDense):
    def __init__(self, units, **kwargs):
        super().__init__(units, extra=("reward_buffer", "reward_count"), **kwargs)


class MovementGatedDense(GatedDense):
    def __init__(self, units, **kwargs):
        super().__init__(units, extra=("movement_scores",), **kwargs)


class PositionalEmbedding(keras.layers.Layer):
    def __init__(self, max_len, d_model, **kwargs):
        super().__init__(**kwargs)
        self.max_len, self.d_model = max_len, d_model

    def build(self, input_shape):
        self.pos_embedding = keras.layers.Embedding(self.max_len, self.d_model,
                                                    name="pos_embedding")
        self.pos_embedding.build((None,))

    def call(self, inputs):
        return self.pos_embedding(ops.arange(ops.shape(inputs)[1]))


class GatedMultiHeadAttention(keras.layers.Layer):
    dense_class = GatedDense

    def __init__(self, d_model, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.depth = d_model, num_heads, d_model // num_heads
        name = kwargs.get("name", "gated_mha")
        self.wq = self.dense_class(d_model, name=f"{name}_wq")
        self.wk = self.dense_class(d_model, name=f"{name}_wk")
        self.wv = self.dense_class(d_model, name=f"{name}_wv")
        self.dense = self.dense_class(d_model, name=f"{name}_output")

    def _heads(self, x):
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.depth))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, inputs, mask=None):
        q, k, v = (self._heads(f(inputs)) for f in (self.wq, self.wk, self.wv))
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / ops.sqrt(float(self.depth))
        if mask is not None:
            logits = logits + mask * -1e9
        out = ops.matmul(ops.softmax(logits, axis=-1), v)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (ops.shape(inputs)[0], -1,
                                                             self.d_model))
        return self.dense(out)


class GatedTransformerBlock(keras.layers.Layer):
    dense_class = GatedDense
    mha_class = GatedMultiHeadAttention

    def __init__(self, d_model, num_heads, dff, **kwargs):
        super().__init__(**kwargs)
        name = kwargs.get("name", "gated_transformer")
        self.mha = self.mha_class(d_model, num_heads, name=f"{name}_mha")
        self.ffn_layer1 = self.dense_class(dff, activation="relu", name=f"{name}_ffn1")
        self.ffn_layer2 = self.dense_class(d_model, name=f"{name}_ffn2")
        self.layernorm1 = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")
        self.layernorm2 = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")

    def call(self, inputs, mask=None):
        out1 = self.layernorm1(inputs + self.mha(inputs, mask=mask))
        return self.layernorm2(out1 + self.ffn_layer2(self.ffn_layer1(out1)))


class SptGatedMultiHeadAttention(GatedMultiHeadAttention):
    dense_class = SptGatedDense


class SptGatedTransformerBlock(GatedTransformerBlock):
    dense_class = SptGatedDense
    mha_class = SptGatedMultiHeadAttention


class MovementGatedMultiHeadAttention(GatedMultiHeadAttention):
    dense_class = MovementGatedDense


class MovementGatedTransformerBlock(GatedTransformerBlock):
    dense_class = MovementGatedDense
    mha_class = MovementGatedMultiHeadAttention


class _MaskExpansion(keras.layers.Layer):
    """Upstream's Lambda ``cast(reshape(mask, (-1, 1, 1, max_len)), float32) * -1e9``."""

    def call(self, mask):
        return ops.cast(ops.reshape(mask, (-1, 1, 1, ops.shape(mask)[-1])), "float32") * -1e9


class _Cls(keras.layers.Layer):
    def call(self, x):
        return x[:, 0, :]


VARIANTS = {"": (GatedTransformerBlock, GatedDense),
            "spt_": (SptGatedTransformerBlock, SptGatedDense),
            "movement_": (MovementGatedTransformerBlock, MovementGatedDense)}


def build(*, num_layers=2, d_model=256, num_heads=4, dff=512, vocab_size=100, max_len=16,
          num_classes=3, method=""):
    """The upstream functional model (``create_[spt_|movement_]gated_bert_model``), built."""
    block_class, dense_class = VARIANTS[method]
    input_ids = keras.Input(shape=(max_len,), dtype="int32", name="input_ids")
    attention_mask = keras.Input(shape=(max_len,), dtype="int32", name="attention_mask")
    mask = _MaskExpansion(name="mask_expansion")(attention_mask)
    tokens = keras.layers.Embedding(vocab_size, d_model, name="token_embedding")(input_ids)
    positions = PositionalEmbedding(max_len, d_model, name="position_embedding")(input_ids)
    hidden = keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_layernorm")(
        tokens + positions)
    for i in range(num_layers):
        hidden = block_class(d_model, num_heads, dff, name=f"{method}transformer_block_{i}")(
            hidden, mask=mask)
    logits = dense_class(num_classes, name="classifier")(_Cls(name="cls_token")(hidden))
    return keras.Model(inputs=[input_ids, attention_mask], outputs=logits,
                       name=f"{method}GatedBERT")
