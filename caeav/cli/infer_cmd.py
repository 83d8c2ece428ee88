"""`caeav infer`: parse arguments and call `caeav.runtime` (torch-free unless --engine torch)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from caeav.errors import CaeavError
from caeav.runtime.bundle import DEFAULT_BUNDLE, DEFAULT_SAMPLE


class BatchFailed(CaeavError):
    """Some videos of a batch run failed (already listed in the report)."""

    exit_code = 1


def default_inputs(videos: Optional[List[Path]], bundle: Optional[Path]) -> tuple[list, Path]:
    """The bundled default model and sample clip fill in what the user left out."""
    if bundle is None:
        if not (DEFAULT_BUNDLE / "manifest.json").is_file():
            raise CaeavError(f"no --bundle given and this install has no bundled default model ({DEFAULT_BUNDLE}); "
                             "pass --bundle DIR (made by `caeav export`)")
        bundle = DEFAULT_BUNDLE
    if not videos:
        if not DEFAULT_SAMPLE.is_file():
            raise CaeavError(f"no video given and this install has no bundled sample clip ({DEFAULT_SAMPLE}); "
                             "pass VIDEO... (files, folders or .txt lists)")
        videos = [DEFAULT_SAMPLE]
    return list(videos), bundle


def infer(
    videos: Optional[List[Path]] = typer.Argument(None, help="video files, folders or .txt lists (default: the "
                                                  "bundled sample clip)"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="export bundle (default: the bundled model)"),
    engine: str = typer.Option("auto", "--engine", "-e", help="auto, trt, ort or torch"),
    precision: str = typer.Option("fp32", "--precision", "-p", help="fp32, fp16 or int8 (as the bundle has them)"),
    captions: Optional[str] = typer.Option(None, "--captions", help="caption cache file, or 'none' (default: none, "
                                           "the empty-caption features)"),
    task: Optional[str] = typer.Option(None, "--task", help="ave or avvp: fail unless the bundle is for this task"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON (schema caeav.infer/1)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a timeline PNG"),
    window_stride: Optional[int] = typer.Option(None, "--window-stride", help="seconds between windows of a long "
                                                "video (default: T, no overlap; smaller values overlap)"),
    batch: Optional[int] = typer.Option(None, "--batch", help="windows per engine call (default: the bundle's)"),
    workers: int = typer.Option(2, "--workers", help="decoding threads"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="weights for --engine torch"),
    allow_missing_audio: bool = typer.Option(False, "--allow-missing-audio",
                                             help="run videos without an audio track on silence instead of failing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no table, no progress bar"),
) -> None:
    """Per-second audio-visual events of videos, from an export bundle (PyTorch not needed)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from caeav.runtime import InferOptions, Pipeline
    from caeav.runtime.render import print_report
    from caeav.runtime.results import write_json

    inputs, bundle = default_inputs(videos, bundle)
    if window_stride is not None and window_stride < 1:
        raise CaeavError("--window-stride must be at least 1 second")
    options = InferOptions(task=task, engine=engine, precision=precision, captions=captions,
                           window_stride=window_stride, batch=batch, workers=workers,
                           allow_missing_audio=allow_missing_audio, checkpoint=checkpoint)
    pipe = Pipeline(bundle, options)
    err = Console(stderr=True)
    from caeav.runtime.pipeline import collect_videos

    paths = collect_videos(inputs)
    if not paths:
        raise CaeavError("no video files found in " + ", ".join(str(i) for i in inputs))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet or len(paths) < 2 or not err.is_terminal) as bar:
        job = bar.add_task(f"infer ({pipe.model.engine} {pipe.model.precision})", total=len(paths))
        report = pipe.run(paths, progress=lambda _p: bar.advance(job))
    if not quiet:
        print_report(report)
    if json_out is not None:
        write_json(report, json_out)
    if plot is not None and report.results:
        from caeav.runtime.plot import draw_timeline

        draw_timeline(report.results, pipe.bundle.task, plot)
    if report.failures:
        listed = "; ".join(f"{f.path}: {f.error}" if not f.error.startswith(f.path) else f.error
                           for f in report.failures[:3])
        more = f" (+{len(report.failures) - 3} more)" if len(report.failures) > 3 else ""
        raise BatchFailed(f"{len(report.failures)} of {len(paths)} video(s) failed: {listed}{more}")
