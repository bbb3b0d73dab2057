"""``gatex export``: lower a zoo unit or a user model to a backend, and check it against torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gatex.cli.options import parse_shape
from gatex.errors import BackendUnavailableError, BadInputError, CheckFailedError


def _shape(text: str) -> tuple[int, ...]:
    return parse_shape(text, example="4,64")


def export(
    unit: Annotated[str | None, typer.Option(
        "--unit", "-u", help="Zoo unit to export (its reference digits model), e.g. paGLU.",
    )] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="User model: module:attr or file.py:attr (nn.Module or factory), "
                              "or a .pt2 program.",
    )] = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Checkpoint for --model (safetensors, or a torch file).",
    )] = None,
    trust_checkpoint: Annotated[bool, typer.Option(
        "--trust-checkpoint", help="Allow a pickle checkpoint that needs code to load.",
    )] = False,
    input_shape: Annotated[str | None, typer.Option(
        "--input-shape", help="Example input shape for --model, batch first (e.g. 4,64); "
                              "the check runs on random normal inputs of this shape.",
    )] = None,
    input_specs: Annotated[list[str] | None, typer.Option(
        "--input", help="An input of --model as [NAME:]DTYPE[SHAPE][:LO..HI], repeated per "
                        "input in forward's order, e.g. --input input_ids:int64[2,32]:0..1000 "
                        "(ints uniform in [LO, HI); floats uniform, or normal without a "
                        "range). Without --input, --input-shape or --inputs: the model "
                        "file's example_inputs().",
    )] = None,
    inputs_npz: Annotated[Path | None, typer.Option(
        "--inputs", help="The inputs of --model from an .npz (arrays in forward's order; "
                         "example and check inputs both).",
    )] = None,
    dynamic: Annotated[list[str] | None, typer.Option(
        "--dynamic", help="Dynamic axes by name, [INPUT:]AXIS=NAME[,AXIS=NAME] (INPUT: index "
                          "or --input name; default every input), e.g. --dynamic 0=batch,1=seq."
                          " Names reach ONNX dim_params; each is checked at a second size. "
                          "Default: axis 0 (batch); --static: none.",
    )] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="The artifact's file stem (default: the unit, or --model's attribute), "
                       "e.g. --name encoder writes encoder-portable-fp32.onnx.",
    )] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an artifact of the same name that another model wrote (by "
                        "default that is refused, exit 2).",
    )] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No stage progress and no stage times; results and errors only.",
    )] = False,
    to: Annotated[str, typer.Option(
        "--to", help="Backend: onnx, coreml or trt (a TensorRT build bundle; the engine too "
                     "where TensorRT is installed, else exit 3 once the bundle is written).",
    )] = "onnx",
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")] = Path("."),
    flavor: Annotated[str, typer.Option(
        "--flavor", help="portable (custom ops + local functions), plugin (TensorRT plugins, "
                         "no functions), inline (standard ops only).",
    )] = "portable",
    dtype: Annotated[str, typer.Option("--dtype", help="fp32 or fp16.")] = "fp32",
    opset: Annotated[int | None, typer.Option(
        "--opset", help="ONNX opset: 20 up to the newest the installed onnx knows (default 21).",
    )] = None,
    dynamic_batch: Annotated[bool, typer.Option(
        "--dynamic-batch/--static", help="Dynamic batch dimension, or the example's batch.",
    )] = True,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="Run the parity check after exporting (default on).",
    )] = True,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="CoreML compute precision: fp16 (default) or fp32. TensorRT "
                            "engine precision, set in the ONNX types: fp16 (default), fp32, bf16.",
    )] = None,
    plugins: Annotated[str | None, typer.Option(
        "--plugins", help="TensorRT: which gatex ops become plugins: auto (default: a plugin "
                          "where the op's decomposition is measured unsafe in the precision), "
                          "all, none.",
    )] = None,
    deployment_target: Annotated[str | None, typer.Option(
        "--target", help="CoreML minimum deployment target: iOS15..iOS18, macOS12..macOS15, "
                         "... (default iOS17).",
    )] = None,
    compute_units: Annotated[str | None, typer.Option(
        "--compute-units", help="CoreML compute units: all (default), cpu, cpu_gpu, cpu_ne.",
    )] = None,
    compact: Annotated[bool, typer.Option(
        "--compact", help="Every target: remove GatedDense units no consumer needs (all-zero "
                          "gate columns, unread rows) and the next layer's matching inputs "
                          "before exporting; same outputs, smaller layers (for trt: in the "
                          "bundle's ONNX). Checked against the uncompacted model; recorded in "
                          "the artifact's metadata (gatex.compaction).",
    )] = False,
    sparse_weights: Annotated[bool, typer.Option(
        "--sparse-weights", help="Fold gates into kernels and store mostly-zero weights sparse, "
                                 "values unchanged (smaller file, same outputs). onnx: "
                                 "sparse_initializer (COO). coreml: constexpr_sparse_to_dense "
                                 "(bit mask + non-zeros; needs --target iOS16/macOS13 or "
                                 "newer). trt: refused (the engine stores weights dense).",
    )] = False,
    pg_scale: Annotated[str, typer.Option(
        "--pg-scale", help="PGConv2d activation scale: dynamic (upstream: max|x| of each batch, "
                           "so a sample's output depends on its batch) or calibrated (fixed per "
                           "layer to max|x| over the calibration data; inputs beyond it "
                           "saturate).",
    )] = "dynamic",
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="Calibration inputs for --pg-scale calibrated: an .npz with an "
                              "array x (N, *input shape); default for --unit: its held-out "
                              "digits.",
    )] = None,
) -> None:
    """Export a model with gated units and check the artifact numerically against torch.

    With --unit the model is the zoo's, checked on all 450 held-out digits. The artifact is
    written atomically; a failed parity check exits 1 and says which output, by how much, and
    which tolerance would have passed. Bad input exits 2; an unavailable backend exits 3.
    """
    from gatex import pipeline

    _check_option_combinations(unit, model, to, flavor, dtype, opset, precision,
                               deployment_target, compute_units, plugins)
    pipeline.check_pg_scale(pg_scale)  # before --model loads anything
    if calibration is not None and pg_scale != "calibrated":
        raise BadInputError("--calibration goes with --pg-scale calibrated")
    if dynamic and not dynamic_batch:
        raise BadInputError("--dynamic and --static contradict each other: name the dynamic "
                            "axes, or none")
    target, examples, check_inputs, stem, calibration_inputs, names = _model_and_inputs(
        unit, model, weights, trust_checkpoint, input_shape, list(input_specs or []),
        inputs_npz, pg_scale, calibration)
    dynamic_shapes = None
    if dynamic:
        from gatex.exporters.dynamic import parse_cli

        dynamic_shapes = parse_cli(dynamic, len(examples) if examples else 1, names)
    console = Console()
    status = _StageStatus(quiet)
    try:
        with status:
            result = pipeline.export(target, examples, to=to, out_dir=out_dir,
                                      name=name or stem, source_ref=_source_ref(unit, model),
                                      force=force, on_stage=status.update,
                                      flavor=flavor, dtype=dtype, opset=opset,
                                      dynamic_batch=dynamic_batch,
                                      dynamic_shapes=dynamic_shapes, check=check,
                                      check_inputs=check_inputs, precision=precision or "fp16",
                                      deployment_target=deployment_target,
                                      compute_units=compute_units or "all",
                                      plugins=plugins or "auto", compact=compact,
                                      sparse_weights=sparse_weights, pg_scale=pg_scale,
                                      calibration=calibration_inputs)
    except BackendUnavailableError as exc:  # a TensorRT bundle without engine: show the plan
        if hasattr(exc, "artifact"):
            _print_trt(console, exc.artifact)
            _print_pruning(console, exc)  # a violated pruned-weights check: exit 1, not 3
        raise
    for line in result.warnings:
        typer.echo(f"warning: {line}", err=True)
    _print_result(console, result, check)
    if not quiet and result.timings:
        console.print(_times_text(result.timings), markup=False)


class _StageStatus:
    """The stage an export is in, as a rich status line on stderr (a terminal only: a log gets
    the times at the end, not a spinner's redraws)."""

    def __init__(self, quiet: bool) -> None:
        self._console = Console(stderr=True)
        self._status = None if quiet or not self._console.is_terminal else \
            self._console.status("export: starting")

    def __enter__(self) -> _StageStatus:
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def update(self, stage: str) -> None:
        if self._status is not None:
            self._status.update(f"export: {STAGE_TEXT.get(stage, stage)}")


STAGE_TEXT = {"prepare": "loading the model and checking its op parameters",
              "trace": "tracing (torch.export) and translating to ONNX",
              "write": "building functions and saving", "convert": "converting to CoreML",
              "bundle": "writing the TensorRT bundle", "check": "checking parity"}


def _times_text(timings: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    return f"stages: {parts} (total {sum(timings.values()):.1f} s)"


def _check_option_combinations(unit: str | None, model: str | None, to: str, flavor: str,
                               dtype: str, opset: int | None, precision: str | None,
                               deployment_target: str | None, compute_units: str | None,
                               plugins: str | None) -> None:
    """Options that do not go together are bad input before anything loads."""
    if (unit is None) == (model is None):
        raise BadInputError("give exactly one of --unit NAME or --model REF")
    if to == "trt":
        _check_trt_options(flavor, dtype, deployment_target, compute_units)
    elif plugins is not None:
        raise BadInputError("--plugins goes with --to trt")
    coreml_options = {"--precision": precision, "--target": deployment_target,
                      "--compute-units": compute_units}
    if to not in ("coreml", "trt") and any(v is not None for v in coreml_options.values()):
        given = ", ".join(k for k, v in coreml_options.items() if v is not None)
        verb = "goes" if given.count(",") == 0 else "go"
        raise BadInputError(f"{given} {verb} with --to coreml; ONNX export takes --dtype")
    if to == "coreml":
        onnx_options = {"--flavor": flavor != "portable", "--opset": opset is not None,
                        "--dtype": dtype != "fp32"}
        given = ", ".join(k for k, v in onnx_options.items() if v)
        if given:
            verb = "goes" if given.count(",") == 0 else "go"
            raise BadInputError(f"{given} {verb} with --to onnx; CoreML export takes "
                                "--precision, --target and --compute-units")


def _model_and_inputs(unit: str | None, model: str | None, weights: Path | None,
                      trust_checkpoint: bool, input_shape: str | None, input_specs: list[str],
                      inputs_npz: Path | None, pg_scale: str, calibration: Path | None
                      ) -> tuple[Any, Any, Any, str | None, Any, tuple[str, ...]]:
    """(the zoo unit or the loaded model, example inputs, check inputs, artifact stem, the
    calibration inputs, the input names); --model's inputs as `model_inputs` gives them."""
    from gatex.artifacts.npz import load_calibration

    if unit is not None:
        extra = [o for o, v in (("--weights", weights), ("--input-shape", input_shape),
                                ("--input", input_specs), ("--inputs", inputs_npz)) if v]
        if extra:
            raise BadInputError(f"{', '.join(extra)} go{'es' if len(extra) == 1 else ''} with "
                                "--model, not --unit")
        calibration_inputs = None
        if calibration is not None:
            from gatex.models import zoo

            calibration_inputs = load_calibration(calibration, zoo.entry(unit).input_shape)
        return unit, None, None, None, calibration_inputs, ()
    from gatex import load_model
    from gatex.cli.model_inputs import model_inputs

    if input_shape is not None:
        _shape(input_shape)  # bad input before the model loads
    target = load_model(model, weights=weights, trust_checkpoint=trust_checkpoint)
    examples, check_inputs, names = model_inputs(model, input_shape=input_shape,
                                                 inputs=input_specs, inputs_npz=inputs_npz)
    name = Path(model.rpartition(":")[2] or model).stem
    calibration_inputs = None
    if pg_scale == "calibrated":
        if calibration is None:
            raise BadInputError("--pg-scale calibrated with --model needs --calibration "
                                "F.npz (an array x of inputs shaped like --input-shape)")
        calibration_inputs = load_calibration(calibration, tuple(examples[0].shape[1:]))
    return target, examples, check_inputs, name, calibration_inputs, names


def _source_ref(unit: str | None, model: str | None) -> str | None:
    """What the artifact records as its model: the zoo unit, or --model with its file made
    absolute (``a.py:build`` from two folders are two models)."""
    if unit is not None or model is None:
        return None   # the pipeline records zoo:<unit>
    path, colon, attr = model.rpartition(":")
    if colon and path.endswith(".py"):
        return f"{Path(path).resolve()}:{attr}"
    return str(Path(model).resolve()) if model.endswith(".pt2") else model


def _print_result(console: Console, result: Any, check: bool) -> None:
    """What was written and its parity verdict; a failed check raises (exit 1)."""
    _print_pg_scale(console, result)
    if result.target == "trt":
        _print_trt(console, result.artifact)
        _print_pruning(console, result)
        _print_parity(console, result, check)
        return
    if result.target == "coreml":
        _print_coreml(console, result, check)
        return
    size = result.path.stat().st_size
    console.print(f"wrote [bold]{result.path}[/] ({size / 1024:.1f} KiB, {result.flavor}, "
                  f"{result.dtype}, opset {result.artifact.opset}); gatex ops: "
                  f"{', '.join(result.ops) or 'none'}")
    if result.artifact.inlined_variants:
        console.print(f"inlined (a second parameter variant of an op): "
                      f"{', '.join(result.artifact.inlined_variants)}")
    _print_pruning(console, result)
    if result.parity is None:
        reason = "--no-check" if not check else "the plugin flavor runs only under TensorRT"
        console.print(f"parity: not checked ({reason})")
        return
    from gatex.comparison.report import print_results

    print_results([result.parity], console)
    if not result.parity:  # the artifact stays, for gatex parity --locate
        raise CheckFailedError(f"parity failed: {result.parity.summary()}")


def _print_pruning(console: Console, result) -> None:
    """The compaction report (units before -> after per GatedDense layer) and the pruned-weights
    check of ``result`` (an ExportResult, or an EngineNotBuilt carrying them); a violated check
    is a failure (exit 1) naming the layer."""
    if getattr(result, "compaction", None) is not None:
        for x in result.compaction.layers:
            if x.compacted:
                console.print(f"compact {x.name}: {x.units_before} -> {x.units_after} units "
                              f"(inputs of {x.consumer} sliced to match; {x.folded} constant "
                              f"units folded into its bias)")
            else:
                console.print(f"compact {x.name}: not compacted: {x.why_not}")
        console.print(result.compaction.summary())
    if getattr(result, "pruned", None) is not None:
        console.print(result.pruned.summary(), markup=False)
        if not result.pruned:
            raise CheckFailedError(result.pruned.summary())


def _print_pg_scale(console: Console, result) -> None:
    """For a model with PGConv2d: which activation scale the artifact uses, and its trade-off."""
    from gatex.models.calibrate import DYNAMIC_NOTE, TRADE_OFF

    if result.calibration is not None:
        console.print(result.calibration.summary(), markup=False)
        console.print(TRADE_OFF, markup=False)
    elif "PGConv2d" in result.ops:  # a caveat of the artifact: one warning line on stderr
        typer.echo(f"warning: {DYNAMIC_NOTE}", err=True)


def _check_trt_options(flavor: str, dtype: str, deployment_target: str | None,
                       compute_units: str | None) -> None:
    given = [k for k, v in (("--flavor", flavor != "portable"), ("--dtype", dtype != "fp32"),
                            ("--target", deployment_target is not None),
                            ("--compute-units", compute_units is not None)) if v]
    if given:
        verb = "is" if len(given) == 1 else "are"
        raise BadInputError(f"{', '.join(given)} {verb} not for --to trt; TensorRT export takes "
                            "--precision, --plugins and --opset")


def _print_trt(console: Console, art) -> None:
    """The plugin decision table and what the bundle holds."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"TensorRT plan: {art.precision}, --plugins {art.policy}",
                  show_lines=True)
    table.add_column("op", style="bold cyan", no_wrap=True)
    table.add_column("choice", no_wrap=True)
    table.add_column("why")
    for d in art.decisions:
        table.add_row(d.op, d.choice, Text(d.reason))
    console.print(table)
    kernels = ("no plugin, so no kernel to compile" if not art.plugins else
               "plugin kernels precompiled to PTX (kernels.json)" if art.kernels_precompiled
               else "no kernels.json: the build compiles the plugin kernels with gatex[triton]")
    console.print(f"wrote [bold]{art.bundle}[/]: {', '.join(art.files)}; {kernels}")
    if art.engine_path is not None:
        size = art.engine_path.stat().st_size
        console.print(f"built [bold]{art.engine_path}[/] ({size / 1024:.1f} KiB)")


def _print_parity(console: Console, result, check: bool) -> None:
    if result.parity is None:
        console.print("parity: not checked (--no-check)" if not check else
                      "parity: not checked (no engine)")
        return
    from gatex.comparison.report import print_results

    print_results([result.parity], console)
    if not result.parity:
        raise CheckFailedError(f"parity failed: {result.parity.summary()}")


def _print_coreml(console: Console, result, check: bool) -> None:
    art = result.artifact
    size = sum(f.stat().st_size for f in result.path.rglob("*") if f.is_file())
    console.print(f"wrote [bold]{result.path}[/] ({size / 1024:.1f} KiB, ML Program, "
                  f"{art.precision}, {art.target}, compute units {art.compute_units}); "
                  f"gatex ops: {', '.join(result.ops) or 'none'}")
    _print_pruning(console, result)
    if result.parity is None:
        console.print("parity: not checked (--no-check)")
        return
    from gatex.comparison.report import print_results

    print_results([result.parity], console)
    if not result.parity:  # the package stays, for gatex parity
        raise CheckFailedError(f"parity failed: {result.parity.summary()}")
