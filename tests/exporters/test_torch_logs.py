"""`held_torch_logs`: torch's log records wait until the block ends; on success the ones that
matter reach torch's handlers (known noise dropped), on failure none do (the error is one line),
unless GATEX_DEBUG asks for everything."""

from __future__ import annotations

import logging

import pytest

from gatex.torch_logs import held_torch_logs

NOISE = "torchvision is not installed. Skipping torchvision::nms"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Collect:
    """Stands in for torch's stderr handlers on the two loggers the records reach."""
    collect = Collect()
    for name in ("torch", "torch.onnx"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [collect])
        monkeypatch.setattr(logging.getLogger(name), "propagate", False)
    monkeypatch.delenv("GATEX_DEBUG", raising=False)
    return collect


def log_both() -> None:
    logging.getLogger("torch.onnx.gatex_test").warning(NOISE)
    logging.getLogger("torch.gatex_test").warning("a real warning: %s", "keep me")


def test_success_replays_what_matters_and_drops_noise(seen: Collect) -> None:
    with held_torch_logs():
        log_both()
        assert seen.messages == []  # held while the block runs
    assert seen.messages == ["torch.gatex_test: a real warning: keep me"]


def test_failure_drops_everything(seen: Collect) -> None:
    with pytest.raises(ZeroDivisionError), held_torch_logs():
        log_both()
        1 / 0  # noqa: B018
    assert seen.messages == []


def test_failure_with_gatex_debug_replays_everything(seen: Collect,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEX_DEBUG", "1")
    with pytest.raises(ZeroDivisionError), held_torch_logs():
        log_both()
        1 / 0  # noqa: B018
    assert seen.messages == [f"torch.onnx.gatex_test: {NOISE}",
                             "torch.gatex_test: a real warning: keep me"]


def test_handlers_are_restored(seen: Collect) -> None:
    before = {name: list(logging.getLogger(name).handlers)
              for name in logging.Logger.manager.loggerDict if name.startswith("torch")}
    with pytest.raises(RuntimeError), held_torch_logs():
        raise RuntimeError("boom")
    after = {name: list(logging.getLogger(name).handlers) for name in before}
    assert after == before
