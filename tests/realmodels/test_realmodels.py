"""Real architectures through every target (issue 14): the README's matrix, as tests.

Each corpus model (corpus.py: GPT-2, Gated BERT, ResNet-18, ViT-tiny, CIFAR ResNet-20, a
PaGRUCell classifier) x each target (matrix.py: ONNX fp32/fp16, CoreML fp32/fp16 emulated, the
TensorRT bundle's graph, OpenVINO, plain torch.onnx) is one test. The default run keeps one
cell per target and model family (about a minute); the rest are slow-marked.

Known failures are asserted as such (KNOWN, strict xfail: a fix shows up as XPASS); there are
none today. ResNet-20 with CGConv2d and PGConv2d passes every target by decision-forced parity
(each gate and level flip proved a boundary flip, the outputs judged against torch with the
artifact's decisions); its default cell is the PG model on onnxruntime fp32.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import corpus
import pytest
from corpus import ENTRIES, Entry
from matrix import TARGETS, no_output, run_cell

DEFAULT = {("gpt2-paGLU", "coreml-fp16"), ("bert-GatedDense", "torch.onnx"),
           ("vit-tiny-ZiLU", "openvino"), ("gru-PaGRUCell", "onnx-fp32"),
           ("gru-PaGRUCell", "onnx-fp16"), ("gru-PaGRUCell", "coreml-fp32"),
           ("gru-PaGRUCell", "trt-bundle"), ("resnet20-PG", "onnx-fp32")}
# (model, target) -> why it fails today
KNOWN: dict[tuple[str, str], str] = {}
NEEDS = {"openvino": "openvino", "coreml-fp32": "coremltools", "coreml-fp16": "coremltools"}


def _cases() -> list:
    cases = []
    for entry in ENTRIES:
        for target in TARGETS:
            marks = []
            if (entry.name, target) not in DEFAULT:
                marks.append(pytest.mark.slow)
            if (entry.name, target) in KNOWN:
                marks.append(pytest.mark.xfail(reason=KNOWN[entry.name, target], strict=True))
            cases.append(pytest.param(entry, target, marks=marks,
                                      id=f"{entry.name}-{target}"))
    return cases


@cache
def _built(name: str) -> tuple:
    entry = next(e for e in ENTRIES if e.name == name)
    return no_output(entry.build)


@pytest.mark.parametrize("entry, target", _cases())
def test_real_model_reaches_target_and_matches_torch(entry: Entry, target: str,
                                                     tmp_path) -> None:
    for module in filter(None, (entry.library, NEEDS.get(target))):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'gatex[models,openvino]')")
    model, inputs = _built(entry.name)
    cell = no_output(lambda: run_cell(entry, model, inputs, target, tmp_path))
    assert cell.passed, cell.note
    assert cell.max_abs is not None


def test_every_corpus_model_has_a_default_cell() -> None:
    # a model added to the corpus is exercised by the default run, not only by --run-slow
    assert {name for name, _ in DEFAULT} >= {e.name for e in ENTRIES if not e.slow}
    assert {t for _, t in DEFAULT} == set(TARGETS)


@pytest.mark.parametrize("name, max_seq", [
    pytest.param("gpt2-paGLU", corpus.GPT2_MAX_SEQ, marks=pytest.mark.slow),
    ("bert-GatedDense", corpus.BERT_MAX_SEQ),
])
def test_token_models_take_every_sequence_length_up_to_their_maximum(name: str, max_seq: int,
                                                                    tmp_path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    import gatex

    entry = next(e for e in ENTRIES if e.name == name)
    if entry.library and importlib.util.find_spec(entry.library) is None:
        pytest.skip(f"{entry.library} is not installed")
    model, inputs = _built(name)
    result = no_output(lambda: gatex.export(model, inputs, out_dir=tmp_path, name=name,
                                            dynamic_shapes=entry.dynamic, check=False))
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for seq in (1, 7, max_seq // 2 + 3, max_seq):
        ids = torch.randint(0, 1000, (3, seq), generator=torch.Generator().manual_seed(seq))
        got = session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, model(ids).numpy(), rtol=1e-4, atol=1e-5)
