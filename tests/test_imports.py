"""Optional backends stay lazy: importing gatex, or running ``gatex --help``, loads none of them."""

from __future__ import annotations

import json
import textwrap

HEAVY_OPTIONAL = ("onnx", "onnxruntime", "onnxscript", "coremltools", "tensorrt", "triton", "cupy")

CHILD = textwrap.dedent("""
    import json, sys
    import gatex, gatex.ops, gatex.cli
    from gatex.cli import main
    try:
        main(["--help"])
    except SystemExit as exc:
        code = exc.code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    print("RESULT " + json.dumps({"help_exit": code, "heavy": heavy}))
""")


def test_import_gatex_and_help_load_no_optional_backend(run_python):
    proc = run_python("-c", f"HEAVY = {HEAVY_OPTIONAL!r}" + CHILD)
    assert proc.returncode == 0, proc.stderr
    *help_lines, last = proc.stdout.splitlines()
    result = json.loads(last.removeprefix("RESULT "))
    assert result == {"help_exit": 0, "heavy": []}
    assert any("Usage" in line for line in help_lines)
    assert "Traceback" not in proc.stderr


def test_import_gatex_alone_imports_no_torch(run_python):
    """``import gatex`` is light (PEP 562 attributes), so the console entry point installs its
    signal handlers before torch loads; the first use of an attribute brings the rest."""
    proc = run_python("-c", "import sys, gatex; light = 'torch' not in sys.modules; "
                            "gatex.export; print(light, 'torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
