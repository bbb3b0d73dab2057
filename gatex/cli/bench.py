"""``gatex bench``: latency, memory, load time and size per backend, each in its own process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gatex.cli.options import parse_shape


def _shape(text: str) -> tuple[int, ...]:
    return parse_shape(text, example="1,64")


def bench(
    artifacts: Annotated[list[Path] | None, typer.Argument(
        help="Artifacts to measure: .onnx (ort), .mlpackage (coreml), .engine (trt).",
        show_default=False, metavar="ARTIFACT",
    )] = None,
    unit: Annotated[str | None, typer.Option(
        "--unit", "-u", help="Zoo unit: its digits model is the torch reference (and, with no "
                             "ARTIFACT, is exported to a temporary ONNX file for ort).",
        show_default=False,
    )] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="User model: module:attr or file.py:attr (nn.Module or factory), "
                              "or a .pt2 program; needs --input-shape.", show_default=False,
    )] = None,
    weights: Annotated[Path | None, typer.Option(
        help="Checkpoint for --model (safetensors, or a torch file).", show_default=False,
    )] = None,
    trust_checkpoint: Annotated[bool, typer.Option(
        "--trust-checkpoint", help="Allow a --weights pickle that needs code to load.",
    )] = False,
    input_shape: Annotated[str | None, typer.Option(
        "--input-shape", help="Input shape for --model, batch first (e.g. 1,64); the batch "
                              "comes from --batch-size.", show_default=False,
    )] = None,
    input_specs: Annotated[list[str] | None, typer.Option(
        "--input", help="An input as [NAME:]DTYPE[SHAPE][:LO..HI], repeated per input in "
                        "order, e.g. --input input_ids:int64[1,32]:0..1000 (token models); "
                        "the first size is the batch.", show_default=False,
    )] = None,
    inputs_npz: Annotated[Path | None, typer.Option(
        "--inputs", help="The inputs from an .npz (arrays in the model's input order; the "
                         "first size is the batch).", show_default=False,
    )] = None,
    backend: Annotated[str, typer.Option(
        "--backend", "-b", help="all (every backend here; the others are listed with the "
                                "reason), or a list of torch,ort,openvino,coreml,trt "
                                "(openvino times a .onnx as ort does, its functions "
                                "inlined by gatex). torch eager is always the reference row.",
    )] = "all",
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Samples per run (default 1, or the artifact's fixed batch).",
        show_default=False,
    )] = None,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 10,
    iterations: Annotated[int | None, typer.Option(
        help="Timed runs (default 100).", show_default=False,
    )] = None,
    duration: Annotated[float | None, typer.Option(
        help="Seconds of timed runs per backend, instead of --iterations.", show_default=False,
    )] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for torch and onnxruntime (default: each backend's own choice).",
        show_default=False,
    )] = None,
    device: Annotated[str, typer.Option(
        help="cpu or cuda (GPU: device time from CUDA events, end-to-end time apart).",
    )] = "cpu",
    cpus: Annotated[str | None, typer.Option(
        help="Pin every backend's worker to these CPUs (0,1 or 0-3; Linux): steadier numbers "
             "on a shared machine, where a worker moving between CPUs times the machine too.",
        show_default=False,
    )] = None,
    repeat: Annotated[int, typer.Option(
        help="Measure each backend in N fresh processes, interleaved (torch, ort, ..., torch, "
             "ort, ...), pooling their runs; a p50 that differs by more than 5 % between them "
             "is flagged: the machine is not steady enough to reproduce it.",
    )] = 1,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the results as JSON (schema gatex.bench/1).", show_default=False,
    )] = None,
    markdown: Annotated[Path | None, typer.Option(
        help="Write a Markdown summary (for a CI step summary).", show_default=False,
    )] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write a PNG of the latency distributions (needs the plot extra: matplotlib).",
        show_default=False,
    )] = None,
    baseline: Annotated[Path | None, typer.Option(
        help="A previous gatex bench --json to compare p50 with.", show_default=False,
    )] = None,
    max_regression: Annotated[float | None, typer.Option(
        "--max-regression", help="Percent a backend's p50 may exceed the baseline's "
                                 "(default 10); past it, exit 1 naming the backend.",
        show_default=False,
    )] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds one backend's process may take before it is killed.",
    )] = 600.0,
    wide: Annotated[bool, typer.Option(
        "--wide", help="Every column (mean and std, cv, load time, artifact); the default "
                       "table fits 80 columns. JSON and Markdown always have them all.",
    )] = False,
) -> None:
    """Measure latency, throughput, peak memory, load time and model size on each backend.

    Each backend runs in its own process, one after another: warm-up, then timed runs (min,
    mean, p50/p90/p99, max, std, coefficient of variation; a warning above 10 %). A crash stays
    in its process and becomes that backend's error row. Exit 1 when a backend failed or is
    slower than --baseline allows; 2 for bad input (unknown backend, an artifact the backend
    cannot run, a baseline of another schema, iterations < 1, repeat < 1); 3 when a backend named in
    --backend (or matplotlib for --plot) is not available here.
    """
    from gatex.benchmarking.report import run_bench_command
    from gatex.cli.model_inputs import given_arrays

    arrays, note = given_arrays(list(input_specs or []), inputs_npz)

    run_bench_command(list(artifacts or []), json_path=json_path, markdown_path=markdown,
                      plot_path=plot, unit=unit, model=model, weights=weights,
                      trust_checkpoint=trust_checkpoint,
                      input_shape=_shape(input_shape) if input_shape is not None else None,
                      backends=backend, batch_size=batch_size, warmup=warmup,
                      iterations=iterations, duration=duration, threads=threads, device=device,
                      cpus=cpus, repeat=repeat,
                      baseline=baseline, max_regression=max_regression, timeout=timeout,
                      wide=wide, inputs=arrays, inputs_note=note)
