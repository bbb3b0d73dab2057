"""``gatex parity``: run artifacts and their torch reference on the same inputs, compare outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def parity(
    artifacts: Annotated[list[Path], typer.Argument(
        help="Artifacts to check: ONNX files (.onnx), CoreML ML Programs (.mlpackage) and "
             "TensorRT engines (.engine, .plan).",
        show_default=False, metavar="ARTIFACT",
    )],
    reference: Annotated[str, typer.Option(
        help="What the artifacts are compared against: torch (the eager model).",
    )] = "torch",
    unit: Annotated[str | None, typer.Option(
        help="Zoo unit whose model is the reference (default: the gatex.unit the artifact's "
             "metadata records); with --model, only shapes the zoo's inputs.",
        show_default=False,
    )] = None,
    model: Annotated[str | None, typer.Option(
        help="Reference model as module:attr or file.py:attr (an nn.Module or a factory).",
        show_default=False,
    )] = None,
    weights: Annotated[Path | None, typer.Option(
        help="Weights for --model (safetensors, or a torch checkpoint loaded weights_only).",
        show_default=False,
    )] = None,
    trust_checkpoint: Annotated[bool, typer.Option(
        "--trust-checkpoint", help="Allow a --weights pickle that needs code to load.",
    )] = False,
    inputs: Annotated[Path | None, typer.Option(
        help=".npz with one array per input name (default: the zoo's held-out digits).",
        show_default=False,
    )] = None,
    dtype: Annotated[str | None, typer.Option(
        help="fp32 or fp16: the precision whose spec tolerances apply (default: the "
             "artifact's output dtype).", show_default=False,
    )] = None,
    rtol: Annotated[float | None, typer.Option(
        help="Relative tolerance instead of the specs' (reported as yours).", show_default=False,
    )] = None,
    atol: Annotated[float | None, typer.Option(
        help="Absolute tolerance instead of the specs' (reported as yours).", show_default=False,
    )] = None,
    precision_floor: Annotated[bool, typer.Option(
        "--precision-floor/--no-precision-floor",
        help="For an fp16/bf16 artifact, also run the torch reference in that precision and "
             "raise each output's atol to 2x the atol torch's own run needs (shown in every "
             "report); --no-precision-floor judges by the spec tolerance alone.",
    )] = True,
    decisions: Annotated[str, typer.Option(
        help="For models with hard-decision ops (CGConv2d gates, PGConv2d levels): forced "
             "compares the artifact's decisions with torch's layer by layer (a flip must lie "
             "within its rounding bound) and judges the outputs against torch run with the "
             "artifact's decisions, at the spec tolerance (fp16 against fp32, no floor); "
             "strict compares the outputs elementwise with torch's own.",
    )] = "forced",
    max_outliers: Annotated[float | None, typer.Option(
        help="Percent of each output's elements allowed outside the tolerance, for any model "
             "(reported as yours), e.g. 1.5; none by default.",
        show_default=False,
    )] = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the verdicts as JSON (schema gatex.parity/1).", show_default=False,
    )] = None,
    junit: Annotated[Path | None, typer.Option(
        help="Write JUnit XML: a testsuite per artifact, a testcase per output.",
        show_default=False,
    )] = None,
    markdown: Annotated[Path | None, typer.Option(
        help="Write a Markdown summary (for CI step summaries).", show_default=False,
    )] = None,
    locate: Annotated[bool, typer.Option(
        "--locate", help="Also compare every gatex op's output and name the first that "
                         "diverges (portable ONNX).",
    )] = False,
    device: Annotated[str, typer.Option(
        help="onnxruntime device: cpu, cuda or auto.",
    )] = "cpu",
    backend: Annotated[str, typer.Option(
        help="Runtime for .onnx artifacts: auto (onnxruntime), onnxruntime, or openvino "
             "(CPU; the openvino extra), which runs the artifact with its gatex functions "
             "inlined into standard ops by gatex (OpenVINO has no rule for gatex nodes).",
    )] = "auto",
    threads: Annotated[int | None, typer.Option(
        help="onnxruntime intra-op threads (default: onnxruntime's choice).", show_default=False,
    )] = None,
    compute_units: Annotated[str, typer.Option(
        help="CoreML compute units on macOS: all, cpu, cpu_gpu, cpu_ne, or several "
             "comma-separated (one result each). Elsewhere a .mlpackage runs once, in gatex's "
             "MIL emulator, and its results say emulated.",
    )] = "all",
) -> None:
    """Run each ARTIFACT and its torch reference on the same inputs; compare every output.

    Per output: max abs and rel error, mean abs, cosine, max ULP distance in the output dtype,
    NaN/Inf counts and top-1 agreement for logits, against the spec tolerance of the gatex ops
    the model holds (the loosest of them). A low-precision (fp16/bf16) artifact is also held
    to a precision floor: a whole network in fp16 cannot beat torch's own fp16 error, so each
    output's atol is at least 2x the atol torch's fp16 run needs, measured in the same run.
    A model with hard-decision ops (PGConv2d, CGConv2d) is judged by decision-forced parity
    (--decisions forced): each layer's gates and levels against torch's, every flip within
    the rounding bound of its pre-decision value, and the outputs against torch run with the
    artifact's decisions, with no floor (the report lists flips per layer). A
    failure names the output and the tolerance that would have passed. When the reference
    holds GatedDense layers, an ONNX or CoreML artifact must also keep every weight pruned in
    the reference exactly zero (or removed by the compaction its metadata records,
    gatex.compaction): the pruned-weights check, printed and in the JSON as "pruned"; a
    violation fails the artifact. Exit 1 when any output fails; 2 for a
    missing or unreadable file, a wrong input name, shape or dtype, a MIL op the CoreML
    emulator lacks, or an unwritable verdict path (nothing is written); 3 for a missing backend
    (onnxruntime, coremltools, TensorRT for .engine/.plan files).
    """
    from gatex.errors import BadInputError
    from gatex.pipeline.check import run_parity_command

    if max_outliers is not None and not 0 <= max_outliers < 100:
        raise BadInputError(f"--max-outliers must be a percentage in [0, 100); got "
                            f"{max_outliers:g}")

    run_parity_command(artifacts, reference=reference, unit=unit, model=model, weights=weights,
                       trust_checkpoint=trust_checkpoint, inputs=inputs, dtype=dtype, rtol=rtol,
                       atol=atol, json_path=json_path, junit_path=junit, markdown_path=markdown,
                       locate=locate, device=device, threads=threads,
                       compute_units=compute_units, precision_floor=precision_floor,
                       decisions=decisions, backend=backend,
                       max_outliers=None if max_outliers is None else max_outliers / 100)

