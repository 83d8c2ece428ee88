"""`caeav export`: parse arguments and call `caeav.export.bundle.export_bundle` (torch, onnx and the training code are
imported inside the command, so `caeav infer` keeps working without them)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from caeav.cli.options import comma_list, elapsed_log
from caeav.errors import ExportError


def parse_batch(text: str) -> tuple[int, int, int]:
    """"MIN:OPT:MAX" (or one number N = 1:N:N) -> (min, opt, max)."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [1, parts[0], parts[0]]
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise ExportError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {text!r}")
    return parts[0], parts[1], parts[2]


def _engines(out: Path, precision: str, batch) -> None:
    """Build TensorRT engines into the finished bundle (the other half of issue 7, `caeav.export.trt_build`)."""
    try:
        from caeav.export.trt_build import build_engines
    except ImportError as err:
        raise ExportError(f"--engine trt: the TensorRT engine builder is not available ({err}); the ONNX bundle "
                          f"{out} is complete") from None
    from caeav.export.manifest import read_manifest, update_manifest

    built = build_engines(out, read_manifest(out), precision, batch)
    if isinstance(built, dict) and built:
        update_manifest(out, lambda m: m.setdefault("engines", {}).update(built))


def export(
    out: Path = typer.Option(..., "--out", "-o", help="bundle directory to write"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="caeav checkpoint directory (best/, last/)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="preset (tiny, base, paper), with --random-weights"),
    random_weights: bool = typer.Option(False, "--random-weights", help="seeded random weights (tests, demos)"),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="ave, avvp, avqa, avs_s4 (avs), avs_ms3"),
    engine: str = typer.Option("onnx", "--engine", help="onnx, or trt (also build TensorRT engines)"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16, int8 (Q/DQ for TensorRT), int8cpu "
                                  "(onnxruntime's CPU INT8, no calibration) or a comma list such as fp16,int8 "
                                  "(fp32 graphs are always kept)"),
    calib: Optional[Path] = typer.Option(None, "--calib", help="int8: folder of videos or a dataset root"),
    batch: str = typer.Option("1:2:8", "--batch", help="MIN:OPT:MAX batch sizes (TensorRT profile, parity)"),
    seed: int = typer.Option(0, "--seed", help="seed of --random-weights and of the example inputs"),
    embed: bool = typer.Option(True, "--embed-checkpoint/--no-checkpoint",
                               help="copy the checkpoint's weights into the bundle (checkpoint/), for `caeav parity` "
                                    "and `--engine torch` wherever the bundle goes"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key=value (with --config)"),
) -> None:
    """Export a model into a deployable bundle: ONNX graphs (+ FP16 / INT8 variants, TensorRT engines)."""
    if engine not in ("onnx", "trt"):
        raise ExportError(f"--engine must be onnx or trt, got {engine!r}")
    from caeav.runtime.bundle import ORT_ONLY_PRECISIONS, PRECISIONS

    wanted = comma_list(precision, "--precision", PRECISIONS)
    ort_only = [p for p in wanted if p in ORT_ONLY_PRECISIONS]
    if engine == "trt" and ort_only:
        raise ExportError(f"--precision {','.join(ort_only)} is for onnxruntime's CPU provider; TensorRT engines take "
                          f"{', '.join(p for p in PRECISIONS if p not in ORT_ONLY_PRECISIONS)}")
    if (checkpoint is None) == (not random_weights):
        raise ExportError("give either --checkpoint DIR or --config PRESET --random-weights")
    lo, opt, hi = parse_batch(batch)
    from caeav.outputs import check_output_dir

    check_output_dir(out, "--out")

    from caeav.config import canonical_task, load_config
    from caeav.export.bundle import export_bundle
    from caeav.export import source as src

    if checkpoint is not None:
        model, cfg = src.checkpoint_model(checkpoint)
        if task and canonical_task(task) != cfg.task.name:
            raise ExportError(f"checkpoint {checkpoint} is a {cfg.task.name} model, not {task}")
        _stream_weights(model, cfg, checkpoint)
        origin = src.checkpoint_source(checkpoint, embedded=embed)
        tower = src.text_tower(cfg, load_weights=True) if cfg.uses_captions else None
    else:
        cfg = load_config(config or "tiny", task or "ave", overrides or [])
        model = src.random_model(cfg, seed)
        origin = src.random_source(cfg, seed, overrides)
        tower = src.text_tower(cfg, load_weights=False) if cfg.uses_captions else None  # None: no caption graphs
    calib_inputs = None
    if "int8" in wanted and calib is not None:
        from caeav.calibration import build_calib_inputs

        st = None
        if getattr(model, "st_stream", None) is not None:  # AVVP's R(2+1)D-18 stream is quantised too
            from caeav.media.st_frames import STSampling

            st = STSampling.from_config(cfg.st)
        calib_inputs = build_calib_inputs(calib, cfg.task.name, segments=cfg.task.segments,
                                          size=cfg.task.input_size, max_clips=32, st=st)
    precisions = ("fp32",) + tuple(p for p in PRECISIONS[1:] if p in wanted)
    path = export_bundle(model, tower, out, source=origin, precisions=precisions, batch=(lo, opt, hi),
                         calib=calib_inputs, seed=seed, checkpoint=checkpoint if embed else None, log=elapsed_log())
    typer.echo(f"bundle written: {path}")
    if engine == "trt":
        for p in wanted:
            _engines(path, p, (lo, opt, hi))
        typer.echo(f"TensorRT engines built into {path}")


def engines(
    bundle: Path = typer.Argument(..., help="an export bundle (ONNX graphs)"),
    precision: str = typer.Option("fp16", "--precision", help="fp32, fp16 or int8 (from the bundle's graphs)"),
    batch: Optional[str] = typer.Option(None, "--batch", help="MIN:OPT:MAX (default: the bundle's batch range)"),
) -> None:
    """Build TensorRT engines for THIS GPU and TensorRT into an existing bundle (no PyTorch needed: run it on the
    Jetson or workstation that will serve the bundle)."""
    from caeav.export.manifest import verify_bundle

    manifest = verify_bundle(bundle)
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"--precision must be fp32, fp16 or int8, got {precision!r}")
    if batch is None:
        b = manifest.get("batch", {})
        span = (int(b.get("min", 1)), int(b.get("opt", 1)), int(b.get("max", 1)))
    else:
        span = parse_batch(batch)
    _engines(bundle, precision, span)
    typer.echo(f"TensorRT engines built into {bundle}")



def _stream_weights(model, cfg, checkpoint) -> None:
    """AVVP trained on LLP's precomputed features never needed the stream's weights, but a bundle computes the
    features from the video: one line when the checkpoint's stream is random where published weights are expected."""
    if getattr(model, "st_stream", None) is not None and cfg.st.weights_name and not cfg.st.weights:
        from caeav.model.weights import st_expected

        raise ExportError(f"{checkpoint}: its R(2+1)D-18 stream has random weights (trained on precomputed "
                          f"feats/r2plus1d_18 without st.weights), but a bundle computes the features from the video; "
                          f"train with st.weights=PATH: {st_expected(cfg.st)}")
