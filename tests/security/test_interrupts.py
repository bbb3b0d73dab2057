"""Ctrl-C and SIGTERM at different moments: one line, exit 130 / 143, no staging file or
temporary folder left, and no bench worker outliving its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _start(args: list[str], cwd: Path, tmpdir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    env.update(PYTHONPATH=str(REPO), TMPDIR=str(tmpdir), COLUMNS="120")
    return subprocess.Popen([sys.executable, "-m", "gatex", *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _workers_of(tmpdir: Path) -> list[int]:
    """Live processes whose command line names a file under ``tmpdir`` (bench workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "bench_worker" in cmdline and str(tmpdir) in cmdline:
                found.append(int(proc.name))
    return found


def _interrupt(args: list[str], tmp_path: Path, sig: int, delay: float) -> tuple[int, str]:
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmpdir.mkdir()
    proc = _start(args, work, tmpdir)
    time.sleep(delay)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{args} did not end within 60 s of {signal.Signals(sig).name}")
    time.sleep(0.5)
    assert not _workers_of(tmpdir), "a bench worker outlived its parent"
    leftovers = [p.name for p in [*work.rglob("*"), *tmpdir.iterdir()]
                 if p.name.startswith(".") or p.name.endswith((".tmp", ".ses"))
                 or p.name.startswith(("gatex-", "tmp"))]
    assert not leftovers, leftovers
    if proc.returncode == 0:  # it finished before the signal came: nothing more to check
        return 0, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == EXIT[sig], (proc.returncode, err)
    assert lines == [f"error: interrupted ({signal.Signals(sig).name})"], err
    return proc.returncode, err


@pytest.mark.parametrize("sig, delay", [(signal.SIGINT, 0.2), (signal.SIGTERM, 0.2),
                                        (signal.SIGINT, 2.5), (signal.SIGTERM, 4.0)])
def test_export_interrupted(tmp_path: Path, sig: int, delay: float) -> None:
    code, _ = _interrupt(["export", "--unit", "paGLU", "--to", "onnx", "-o", "out"], tmp_path,
                         sig, delay)
    if code:
        assert not (tmp_path / "work" / "out" / "paGLU-portable-fp32.onnx").exists()


def test_bench_interrupted_ends_its_workers(tmp_path: Path) -> None:
    """SIGTERM while a worker measures (SIGINT takes the same path: both raise
    KeyboardInterrupt in the parent, which kills its worker)."""
    _interrupt(["bench", "--unit", "GoLU", "--backend", "torch,ort", "--duration", "20"],
               tmp_path, signal.SIGTERM, 8.0)


def test_coreml_export_interrupted_leaves_no_staging(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    _interrupt(["export", "--unit", "GoLU", "--to", "coreml", "-o", "out"], tmp_path,
               signal.SIGTERM, 6.0)


def test_bench_leaves_nothing_of_its_own_in_tmpdir(tmp_path: Path) -> None:
    """onnxruntime writes a ``.ses`` session file into TMPDIR; the bench's workers get the
    bench's own folder as TMPDIR, so it goes with that folder (torch's shared inductor cache
    folder is torch's, and may stay)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _start(["bench", "--unit", "GoLU", "--backend", "torch,ort", "--iterations", "5"],
                  tmp_path, tmpdir)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in tmpdir.iterdir()
                  if p.name != f"torchinductor_{os.environ.get('USER', 'root')}"
                  and not p.name.startswith("torchinductor_")) == []
